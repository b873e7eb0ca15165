"""Allow `python -m finetune_trainer <phase> --config FILE`."""

import sys

from finetune_trainer.cli import main

sys.exit(main())
