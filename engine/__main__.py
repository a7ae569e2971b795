"""``python -m engine``: see :mod:`engine.cli`."""

import sys

from engine.allocator import keep_freed_memory

if __name__ == "__main__":
    keep_freed_memory()  # before torch allocates anything (see engine.allocator)
    from engine.cli import main

    sys.exit(main())
