"""`python -m finetune_trainer upload --config FILE`: the final artifacts of a successful run to its
`s3://` output (the only process given the output's credentials)."""

from __future__ import annotations


def main(config_path: str) -> int:
    from finetune_trainer.train.exit_codes import run_phase
    from finetune_trainer.upload import UploadDenied, upload_outputs

    return run_phase("upload", config_path, upload_outputs, user_errors=(UploadDenied, ValueError, FileNotFoundError))
