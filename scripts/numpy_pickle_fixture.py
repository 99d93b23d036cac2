"""Write tests/fixtures/numpy_protocol2.pkl: the opcodes Python 2's
cPickle (protocol 2) writes for ((x, y),), x = float32 [[0.5, 1], [0.25, 0]], y = int64 [3, 7]
-- the layout of MNIST's mnist.pkl.gz -- and check that Python's own pickle and NumPy read
it back as those arrays. Run: FIXTURE_VENV python (needs numpy)."""
import pickle
import struct
import sys

import numpy as np


def short(s):  # SHORT_BINSTRING
    return b"U" + bytes([len(s)]) + s


def array(first, dtype, shape, data):
    out = b""
    if first:
        out += b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02"
    else:
        out += b"h\x01h\x02"
    out += b"K\x00\x85" + short(b"b") + b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
    out += b"("  # state: (1, shape, dtype, False, bytes)
    out += b"K\x01" + b"".join(b"K" + bytes([d]) for d in shape) + bytes([0x84 + len(shape)])
    out += (b"cnumpy\ndtype\nq\x04" if first else b"h\x04") + short(dtype)
    out += b"K\x00K\x01\x87R"  # dtype(name, 0, 1)
    out += b"(K\x03" + short(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89T" + struct.pack("<I", len(data)) + data + b"tb"
    return out


x = np.array([[0.5, 1.0], [0.25, 0.0]], dtype="<f4")
y = np.array([3, 7], dtype="<i8")
raw = b"\x80\x02" + array(True, b"f4", x.shape, x.tobytes()) + array(False, b"i8", y.shape, y.tobytes())
raw += b"\x86\x85."  # TUPLE2, TUPLE1, STOP

((rx, ry),) = pickle.loads(raw, encoding="latin1")
assert rx.dtype == np.float32 and (rx == x).all(), rx
assert ry.dtype == np.int64 and (ry == y).all(), ry
out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/numpy_protocol2.pkl"
open(out, "wb").write(raw)
print(f"{out}: {len(raw)} bytes; pickle + numpy {np.__version__} read it back")
