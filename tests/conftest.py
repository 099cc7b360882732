import os
import sys

# Tests share tiny model builders from tests/builders.py.
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_shared = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))
if not os.environ.get("KERAS_COMPRESS_DATA") and os.path.isfile(os.path.join(_shared, "mnist.npz")):
    os.environ["KERAS_COMPRESS_DATA"] = _shared
