"""The fetch step: resolve every source to an immutable identity and download it once into the
content-addressed source cache (DESIGN.md §9 Sources). Hub and S3 clients live here, never in the operator."""
