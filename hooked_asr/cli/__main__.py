import sys

from hooked_asr.cli import main

sys.exit(main())


__all__ = []
