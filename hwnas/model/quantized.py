"""Integer weights of one linear layer, as OpenVINO's weight decompression reads them.

Lives in `model/` because every stage that writes or times an IR with integer weights needs it:
`hardware` (timing IRs in the format a subnet ships with), `deploy` (INC codes into the bundle).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hwnas.errors import ExportError


@dataclass
class QuantizedLinear:
    """Integer weights of one layer: W[o, i] ~= (codes[o, i] - zero_point[o, g]) * scale[o, g], g = i // group_size.

    codes and zero points are unsigned (0 .. 2**bits - 1, INC's convention); `symmetric` is true
    when every zero point is the mid-point, so the codes can be stored signed with no zero point.
    A float zero point (float16, the `int4_minmax_gG` format: GGUF Q4_1's grid) is kept fractional
    and stored as an f16 constant.
    """

    name: str
    bits: int
    group_size: int          # columns per scale; equals in_features for per-channel
    codes: np.ndarray        # uint8 [out, in]
    scale: np.ndarray        # float16 [out, groups]
    zero_point: np.ndarray   # uint8 [out, groups]

    def __post_init__(self) -> None:
        out, inp = self.codes.shape
        if inp % self.group_size:
            raise ExportError(f"{self.name}: group size {self.group_size} does not divide width {inp}")
        groups = inp // self.group_size
        if self.scale.shape != (out, groups) or self.zero_point.shape != (out, groups):
            raise ExportError(f"{self.name}: scale/zero-point shape {self.scale.shape}/{self.zero_point.shape} "
                              f"does not match codes {self.codes.shape} with group size {self.group_size}")
        hi = 2 ** self.bits - 1
        float_zero = np.asarray(self.zero_point).dtype.kind == "f"
        if self.codes.min(initial=0) < 0 or self.codes.max(initial=0) > hi or (
                not float_zero and self.zero_point.max(initial=0) > hi):
            raise ExportError(f"{self.name}: codes outside 0..{hi} for {self.bits}-bit weights")
        self.codes = np.ascontiguousarray(self.codes, dtype=np.uint8)
        self.zero_point = np.ascontiguousarray(self.zero_point, dtype=np.float16 if float_zero else np.uint8)
        self.scale = np.ascontiguousarray(self.scale, dtype=np.float16)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]

    @property
    def n_groups(self) -> int:
        return self.codes.shape[1] // self.group_size

    @property
    def float_zero(self) -> bool:
        """Whether the zero points are fractional (f16), as GGUF's Q4_1 grid needs."""
        return self.zero_point.dtype == np.float16

    @property
    def symmetric(self) -> bool:
        return not self.float_zero and bool(np.all(self.zero_point == 2 ** (self.bits - 1)))

    def signed_codes(self) -> np.ndarray:
        """int8 codes minus the mid-point (only meaningful when `symmetric`)."""
        return (self.codes.astype(np.int16) - 2 ** (self.bits - 1)).astype(np.int8)

    def dequantize(self) -> np.ndarray:
        """float32 weights computed the way OpenVINO's decompression does: f16 (code - zp) * f16 scale."""
        return self.dequantize_rows(np.arange(self.codes.shape[0]))

    def dequantize_rows(self, rows: np.ndarray) -> np.ndarray:
        """`dequantize()[rows]` without the other rows. A fractional zero point is subtracted in float32
        (the CPU plugin decompresses in f32; f16 would round code - zp by up to 1/128)."""
        g = self.n_groups
        codes = self.codes[rows].reshape(len(rows), g, self.group_size)
        zp = self.zero_point[rows][:, :, None]
        if self.float_zero:
            w = (codes.astype(np.float32) - zp.astype(np.float32)) * self.scale[rows][:, :, None].astype(np.float32)
        else:
            diff = codes.astype(np.int16) - zp.astype(np.int16)
            w = diff.astype(np.float16) * self.scale[rows][:, :, None]
        return w.astype(np.float32).reshape(len(rows), -1)

    def nbytes(self) -> int:
        """Bytes of the stored constants (codes packed at `bits`, f16 scales, zero points unless symmetric)."""
        n = self.codes.size * self.bits // 8 + self.scale.size * 2
        if self.float_zero:
            n += self.zero_point.size * 2
        elif not self.symmetric:
            n += (self.zero_point.size * self.bits + 7) // 8
        return n


def rtn_int8_rows(name: str, weight: np.ndarray) -> QuantizedLinear:
    """Per-row symmetric int8 round-to-nearest (embeddings / lm_head), codes in 1..255 around 128."""
    import torch  # multi-threaded and chunked: a 49k x 4096 embedding is 200M values

    if isinstance(weight, torch.Tensor):
        w = weight
    else:  # only read: a read-only array (an OpenVINO constant) is wrapped without a copy, torch's warning silenced
        arr = np.asarray(weight)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            w = torch.as_tensor(arr)
    amax = w.abs().amax(dim=1, keepdim=True).float()
    scale = (torch.where(amax > 0, amax, torch.ones_like(amax)) / 127.0).half()
    scale = torch.where(scale == 0, torch.tensor(torch.finfo(torch.float16).tiny, dtype=torch.float16), scale)
    codes = torch.empty(w.shape, dtype=torch.uint8)
    s32 = scale.float()
    for i in range(0, w.shape[0], 4096):
        blk = w[i:i + 4096].float()
        codes[i:i + 4096] = (torch.clamp(torch.round(blk / s32[i:i + 4096]), -127, 127) + 128).to(torch.uint8)
    zp = np.full(tuple(scale.shape), 128, dtype=np.uint8)
    return QuantizedLinear(name=name, bits=8, group_size=w.shape[1], codes=codes.numpy(), scale=scale.numpy(),
                           zero_point=zp)
