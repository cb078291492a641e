#!/usr/bin/env python3
"""Writes the bad-input corpus used by host/tests/cli.rs.

Every file here is invalid in one specific way; `fdgr` must reject each
with one clear error line naming the file, exit code 2 and no panic.
host/tests/data_fuzz.rs also loads every file here through every loader.
Regenerate with: python3 host/tests/corpus/make_corpus.py
"""
import gzip
import io
import pathlib
import struct
import tarfile

here = pathlib.Path(__file__).resolve().parent


def idx(magic_type, dims, data):
    return bytes([0, 0, magic_type, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def w(name, data):
    (here / name).write_bytes(data)


# MNIST IDX
w("idx-truncated-images", idx(8, [3, 2, 2], [0] * 10))                 # 12 bytes expected
w("idx-wrong-magic-images", b"\x12\x34" + idx(8, [3, 2, 2], [0] * 12)[2:])
w("idx-float-images", idx(0x0D, [3, 2, 2], [0] * 48))                  # float32 element type
w("idx-good-labels", idx(8, [3], [0, 1, 2]))
w("idx-good-images", idx(8, [3, 2, 2], list(range(12))))
w("idx-short-labels", idx(8, [2], [0, 1]))                              # 2 labels for 3 images
w("idx-images-as-labels", idx(8, [3, 2, 2], [0] * 12))                 # 3-d file where labels expected
w("corrupt.gz", gzip.compress(b"1,2,3\n" * 50)[:-20])                  # truncated gzip stream
# CIFAR-10
w("cifar-wrong-size.bin", bytes(3073 + 100))
w("cifar-bad-label.bin", bytes([11]) + bytes(3072))
# CIFAR-100 and the distributed archives
w("cifar100-bad-fine-label.bin", bytes([3, 100]) + bytes(3072))    # fine labels are 0..99


def tar_gz(members):
    """A gzipped tar of (name, bytes) members, byte-for-byte reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1262304000, 0o644
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


batch = bytes([1]) + bytes(3072)
w("cifar10-no-test.tar.gz", tar_gz([("cifar-10-batches-bin/data_batch_%d.bin" % i, batch) for i in range(1, 6)]))
full = tar_gz([("cifar-10-batches-bin/data_batch_1.bin", batch * 4)])
w("cifar10-truncated.tar.gz", full[: len(full) // 2])                 # gzip stream cut in half
# CSV
w("nan.csv", b"0.1,0.2,0\n0.3,nan,1\n")
w("ragged.csv", b"1,2,0\n1,2,3,1\n")
w("bad-label.csv", b"1,2,0\n1,2,1.5\n")
w("empty.csv", b"")
w("text.csv", b"a,b,c\nx,y,z\n")
w("labels-12.csv", b"".join(b"%d,%d,%d\n" % (i, i + 1, i % 13) for i in range(60)))
# model / checkpoint files
w("not-safetensors.safetensors", b"this is not a safetensors file")
w("truncated.safetensors", struct.pack("<Q", 400) + b'{"__metadata__":{"format":"fdgr-mlp"')
w("empty", b"")
print("corpus written to", here)
