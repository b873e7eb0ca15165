"""Dataset checks and preparation (the Validating phase): read, check, tokenize, report, write.

`train` and `evaluate` read the result through `load_prepared` and `prepared_info`.
"""

from .prepared import load_prepared, prepared_info

__all__ = ["load_prepared", "prepared_info"]
