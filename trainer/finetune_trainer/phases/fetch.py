"""`python -m finetune_trainer fetch --config FILE`: the Validating phase's first step (CPU only).

Resolves every source to its identity, downloads hub and S3 sources once into the source cache, and
writes the resolved sources to `sources.json` in the output directory (with a link per source under
`sources/`, which the vLLM pods load the base model through) and to the termination message.
"""

from __future__ import annotations


def main(config_path: str) -> int:
    import shutil

    from finetune_api.contract.sources import FetchSummary
    from finetune_api.resolved import ArtifactLayout, ResolvedConfig
    from finetune_trainer.atomic_json import write_json_atomic
    from finetune_trainer.fetch.run import run_fetch
    from finetune_trainer.fetch.stores import SourceNotFound
    from finetune_trainer.train.exit_codes import run_phase

    def body(config: ResolvedConfig) -> FetchSummary:
        summary = run_fetch(config)
        layout = ArtifactLayout(config.paths.output)
        for source in summary.sources:
            link = layout.fetched(source.role)
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(source.path)
            if link.is_dir() and not link.is_symlink():  # a copied work directory holds a copy where the link was
                shutil.rmtree(link)
            tmp.replace(link)
        write_json_atomic(layout.sources_json, summary.to_wire())
        return summary

    return run_phase("fetch", config_path, body, user_errors=(SourceNotFound, ValueError, FileNotFoundError))
