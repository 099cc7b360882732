"""`python -m keras_compress`: the `keras-compress` command line."""

import sys

from keras_compress.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
