import sys

from purejaxrl_lab.cli import main

sys.exit(main())
