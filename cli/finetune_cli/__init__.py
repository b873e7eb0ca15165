"""`ftctl`: validate, render, run and serve FineTuneJobs from a terminal."""
