# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin, checking layer over the C kernels (csrc/).

Every argument is validated here (dtype, C-contiguity, shapes, writeability)
before any pointer reaches C, so that C code never sees memory it was not
given. The GIL is released around each kernel.
"""

import os

import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint64_t


cdef extern from "vx.h":
    int VX_OK, VX_EINVAL, VX_ENOMEM
    int VX_ISA_SCALAR, VX_ISA_NEON, VX_ISA_AVX2, VX_ISA_AVXVNNI, VX_ISA_AVX512, VX_ISA_AVX512VNNI, VX_ISA_COUNT
    int VX_Q8_0, VX_Q4_0, VX_Q4_K, VX_QTYPE_COUNT
    const char *vx_isa_name(int isa)
    int vx_isa_available(int isa)
    int vx_active_isa()
    int vx_set_isa(int isa)
    int vx_cpu_feature(const char *name)
    void vx_set_num_threads(int n)
    int vx_get_num_threads()
    int vx_matmul_bf16(const float *x, const uint16_t *w, const float *bias, float *out,
                       int64_t M, int64_t N, int64_t K, int accumulate) nogil
    int64_t vx_q_row_bytes(int qtype, int64_t K)
    ctypedef struct vx_qtype_info:
        const char *name
        int block_values
        int block_bytes
        int repacked
    const vx_qtype_info *vx_qtype(int qtype)
    int vx_matmul_q(const float *x, const uint8_t *w, int qtype, const float *bias, float *out,
                    int64_t M, int64_t N, int64_t K, int accumulate) nogil
    const char *vx_q_kernels_name()
    int64_t vx_qp_bytes(int qtype, int64_t N, int64_t K)
    int vx_q_repack(int qtype, const uint8_t *w, int64_t N, int64_t K, uint8_t *dst) nogil
    int vx_q_unpack(int qtype, const uint8_t *wp, int64_t N, int64_t K, uint8_t *dst) nogil
    int vx_matmul_qp(const float *x, const uint8_t *wp, int qtype, const float *bias, float *out,
                     int64_t M, int64_t N, int64_t K, int accumulate) nogil
    ctypedef struct vx_qp_product:
        const uint8_t *wp
        int qtype
        int64_t N
        const float *bias
        float *out
    int VX_QP_MANY_MAX
    int vx_matmul_qp_many(const float *x, int64_t M, int64_t K, const vx_qp_product *products, int count,
                          int accumulate) nogil
    const char *vx_qp_kernels_name()
    int vx_drop_file_pages(const void *p, int64_t nbytes) nogil
    uint64_t vx_stream_read(const void *buf, int64_t nbytes) nogil
    int vx_attention(const float *q, const float *k, const float *v, float *out,
                     int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D,
                     int64_t q_pos0, int64_t k_pos0, int64_t window, float scale) nogil
    int vx_rms_norm(const float *x, const float *w, float *out, int64_t M, int64_t D, float eps) nogil
    int vx_rope(float *x, const float *c, const float *s, int64_t M, int64_t H, int64_t D, int interleaved) nogil
    int vx_gelu(const float *x, float *out, int64_t n) nogil
    int vx_silu_mul(const float *gate, const float *up, float *out, int64_t n) nogil
    int vx_conv1d_bf16(const float *x, const uint16_t *w, const float *bias, float *out,
                       int64_t T_in, int64_t Cin, int64_t Cout, int64_t Kw, int64_t stride) nogil
    int vx_stft_power(const float *signal, int64_t n_signal, const float *window, int64_t n_fft,
                      int64_t hop, int64_t n_frames, float *out) nogil
    int vx_log_mel(const float *power, const float *filters, float *out,
                   int64_t F, int64_t n_freq, int64_t n_mels, float log_floor) nogil


_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512bf16", "avx512vnni",
             "avxvnni", "amx", "neon", "neon_dotprod")


cdef _check(int status, str what):
    if status == VX_OK:
        return
    if status == VX_ENOMEM:
        raise MemoryError(f"{what}: out of memory")
    raise ValueError(f"{what}: invalid arguments")


# ---- argument checking -------------------------------------------------------

def _arr(a, str name, dtype, int ndim=-1):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if ndim >= 0 and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _out(out, str name, shape):
    if out is None:
        return np.empty(shape, dtype=np.float32)
    _arr(out, name, np.float32)
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


cdef const float* _fp(a):
    cdef const float[::1] mv = a.reshape(-1)
    return &mv[0] if mv.shape[0] else NULL


cdef float* _fpw(a):
    cdef float[::1] mv = a.reshape(-1)
    return &mv[0] if mv.shape[0] else NULL


cdef const uint8_t* _u8p(a):
    cdef const uint8_t[::1] mv = a.reshape(-1)
    return &mv[0] if mv.shape[0] else NULL


cdef const uint16_t* _up(a):
    cdef const uint16_t[::1] mv = a.reshape(-1)
    return &mv[0] if mv.shape[0] else NULL


# ---- CPU dispatch and threads -------------------------------------------------

def cpu_features():
    """What this CPU supports (detected once)."""
    return {name: bool(vx_cpu_feature(name.encode())) for name in _FEATURES}


def _isa_id(str name):
    for i in range(VX_ISA_COUNT):
        if vx_isa_name(i).decode() == name:
            return i
    known = ", ".join([vx_isa_name(i).decode() for i in range(VX_ISA_COUNT)])  # a list: Cython -Wextra flags an inlined genexpr
    raise ValueError(f"unknown ISA {name!r} (known: {known})")


def available_isas():
    """ISAs this build can run on this CPU, slowest first."""
    return [vx_isa_name(i).decode() for i in range(VX_ISA_COUNT) if vx_isa_available(i)]


def active_isa():
    return vx_isa_name(vx_active_isa()).decode()


def set_isa(str name):
    """Use the kernels of ``name`` (e.g. to test a fallback); ValueError if this CPU/build lacks it."""
    cdef int isa = _isa_id(name)
    if vx_set_isa(isa) != VX_OK:
        raise ValueError(f"ISA {name!r} is not available on this CPU/build (available: {available_isas()})")


def set_num_threads(int n):
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    vx_set_num_threads(n)


def get_num_threads():
    return vx_get_num_threads()


def physical_cores():
    """Physical cores available to this process (hyper-threads do not help
    memory-bound decoding); falls back to the logical count."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            return len(cpus) or 1
    return max(1, len(cores))


def _init_from_env():
    # A bad setting must not break `import voxtral`: warn once and use the default.
    import warnings
    from .threads import check_num_threads

    cap = os.environ.get("VOXTRAL_ISA", "").strip().lower()
    if cap:
        try:
            wanted = _isa_id(cap)
        except ValueError as exc:
            warnings.warn(f"VOXTRAL_ISA ignored: {exc}; using the best available", RuntimeWarning, stacklevel=2)
            wanted = VX_ISA_COUNT - 1
        # a cap: the best available ISA not above the one asked for
        best = 0
        for i in range(VX_ISA_COUNT):
            if i <= wanted and vx_isa_available(i):
                best = i
        vx_set_isa(best)
    threads = os.environ.get("VOXTRAL_NUM_THREADS", "").strip()
    n = physical_cores()
    if threads:
        try:
            n = check_num_threads(int(threads), "VOXTRAL_NUM_THREADS")
        except Exception as exc:
            warnings.warn(f"VOXTRAL_NUM_THREADS={threads!r} ignored ({exc}); using {n} threads",
                          RuntimeWarning, stacklevel=2)
    vx_set_num_threads(n)


_init_from_env()


# ---- kernels ------------------------------------------------------------------

def _matmul_out(x, w, bias, out, bint accumulate, int64_t M, int64_t N, int64_t K):
    """The checks every matmul shares (sizes, bias, accumulate); returns out [M, N]."""
    if M == 0 or N == 0 or K == 0:
        raise ValueError(f"empty matmul: x {x.shape}, w {w.shape}")
    if bias is not None:
        _arr(bias, "bias", np.float32, 1)
        if bias.shape[0] != N:
            raise ValueError(f"bias has {bias.shape[0]} entries, expected {N}")
    if accumulate and out is None:
        raise ValueError("accumulate=True needs an out array")
    return _out(out, "out", (M, N))


def matmul_bf16(x, w, bias=None, out=None, bint accumulate=False):
    """out[M,N] (+)= x[M,K] @ w[N,K]^T (+ bias); w holds bfloat16 bits as uint16."""
    _arr(x, "x", np.float32, 2)
    _arr(w, "w", np.uint16, 2)
    cdef int64_t M = x.shape[0], K = x.shape[1], N = w.shape[0]
    if w.shape[1] != K:
        raise ValueError(f"x is [{M}, {K}] but w is {list(w.shape)}: inner dimensions differ")
    out = _matmul_out(x, w, bias, out, accumulate, M, N, K)
    cdef const float *px = _fp(x)
    cdef const uint16_t *pw = _up(w)
    cdef const float *pb = _fp(bias) if bias is not None else NULL
    cdef float *po = _fpw(out)
    cdef int acc = accumulate
    cdef int status
    with nogil:
        status = vx_matmul_bf16(px, pw, pb, po, M, N, K, acc)
    _check(status, "matmul_bf16")
    return out


def _qtype_table():
    cdef const vx_qtype_info *t
    table = {}
    for qid in range(VX_QTYPE_COUNT):
        t = vx_qtype(qid)
        table[t.name.decode()] = (qid, t.block_values, t.block_bytes, bool(t.repacked))
    return table


_QTYPE_TABLE = _qtype_table()
if VX_QP_MANY_MAX > 4:  # matmul_qp_many's array of products
    raise ImportError("_kernels: VX_QP_MANY_MAX exceeds matmul_qp_many's array")
_QTYPES = {name: row[:3] for name, row in _QTYPE_TABLE.items()}  # id, values, bytes per block


def qtypes():
    """The C kernel table's weight types: name -> (id, weights per block, bytes
    per block, has the repacked layout). The one source of these facts."""
    return dict(_QTYPE_TABLE)


def q_kernels():
    """Name of the quantized-weight kernel table the active ISA runs (e.g. "avx512vnni")."""
    return vx_q_kernels_name().decode()


def matmul_q(x, w, str qtype, int64_t K, bias=None, out=None, bint accumulate=False):
    """out[M,N] (+)= x[M,K] @ dequant(w)^T (+ bias), w: uint8 [N, row bytes] of GGML
    ``qtype`` blocks (q8_0, q4_0, q4_k). Each row of x is quantized to int8 per
    32 values (scale amax/127); products are exact int32 per block, scaled in fp32."""
    if qtype not in _QTYPES:
        raise ValueError(f"unknown quantization type {qtype!r} (known: {', '.join(_QTYPES)})")
    qid, per, nbytes = _QTYPES[qtype]
    _arr(x, "x", np.float32, 2)
    _arr(w, "w", np.uint8, 2)
    cdef int64_t M = x.shape[0], N = w.shape[0]
    if K <= 0 or K % per:
        raise ValueError(f"{qtype} needs K a positive multiple of {per}, got {K}")
    if x.shape[1] != K:
        raise ValueError(f"x is {list(x.shape)} but K is {K}")
    cdef int64_t rb = K // per * nbytes
    if vx_q_row_bytes(qid, K) != rb:
        raise ValueError(f"{qtype} row size mismatch for K={K}")
    if w.shape[1] != rb:
        raise ValueError(f"w rows have {w.shape[1]} bytes, {qtype} with K={K} needs {rb}")
    out = _matmul_out(x, w, bias, out, accumulate, M, N, K)
    cdef const float *px = _fp(x)
    cdef const uint8_t *pw = _u8p(w)
    cdef const float *pb = _fp(bias) if bias is not None else NULL
    cdef float *po = _fpw(out)
    cdef int acc = accumulate, qt = qid
    cdef int status
    with nogil:
        status = vx_matmul_q(px, pw, qt, pb, po, M, N, K, acc)
    _check(status, "matmul_q")
    return out


def qp_kernels():
    """Name of the repacked-weight kernel table the active ISA runs ("amx", "avx512vnni", "avxvnni", "avx2" or "scalar")."""
    return vx_qp_kernels_name().decode()


def _qp_dims(str qtype, int64_t N, int64_t K):
    """(qtype id, repacked bytes) for a repackable ``qtype``; ValueError otherwise."""
    if qtype not in _QTYPES:
        raise ValueError(f"unknown quantization type {qtype!r} (known: {', '.join(_QTYPES)})")
    qid = _QTYPES[qtype][0]
    cdef int64_t size = vx_qp_bytes(qid, N, K)
    if N <= 0 or size < 0:
        raise ValueError(f"{qtype} [{N}, {K}] cannot be repacked (repacked: {', '.join(repacked_qtypes())})")
    return qid, size


def repacked_qtypes():
    """The weight types that have a repacked layout."""
    return tuple([name for name, row in _QTYPE_TABLE.items() if row[3]])  # a list: Cython -Wextra flags an inlined genexpr


def repack_q(w, str qtype, int64_t K):
    """GGML rows uint8 [N, row bytes] -> the interleaved layout (csrc/qpack.c), uint8 1-D."""
    _arr(w, "w", np.uint8, 2)
    cdef int64_t N = w.shape[0]
    qid, size = _qp_dims(qtype, N, K)
    if vx_q_row_bytes(qid, K) != w.shape[1]:
        raise ValueError(f"w rows have {w.shape[1]} bytes, {qtype} with K={K} needs {vx_q_row_bytes(qid, K)}")
    dst = np.empty(size, dtype=np.uint8)
    cdef const uint8_t *pw = _u8p(w)
    cdef uint8_t[::1] dv = dst.reshape(-1)
    cdef uint8_t *pd = &dv[0]
    cdef int qt = qid, status
    with nogil:
        status = vx_q_repack(qt, pw, N, K, pd)
    _check(status, "repack_q")
    return dst


def unpack_q(wp, str qtype, int64_t N, int64_t K):
    """The inverse of repack_q: GGML rows uint8 [N, row bytes]."""
    _arr(wp, "wp", np.uint8, 1)
    qid, size = _qp_dims(qtype, N, K)
    if wp.shape[0] != size:
        raise ValueError(f"repacked {qtype} [{N}, {K}] has {size} bytes, got {wp.shape[0]}")
    dst = np.empty((N, vx_q_row_bytes(qid, K)), dtype=np.uint8)
    cdef const uint8_t *pw = _u8p(wp)
    cdef uint8_t[::1] dv = dst.reshape(-1)
    cdef uint8_t *pd = &dv[0]
    cdef int qt = qid, status
    with nogil:
        status = vx_q_unpack(qt, pw, N, K, pd)
    _check(status, "unpack_q")
    return dst


def matmul_qp(x, wp, str qtype, int64_t N, int64_t K, bias=None, out=None, bint accumulate=False):
    """matmul_q over weights repacked by repack_q (N rows): the same product,
    by the fixed per-output sequence documented in csrc/qpack.c."""
    _arr(x, "x", np.float32, 2)
    _arr(wp, "wp", np.uint8, 1)
    qid, size = _qp_dims(qtype, N, K)
    if wp.shape[0] != size:
        raise ValueError(f"repacked {qtype} [{N}, {K}] has {size} bytes, got {wp.shape[0]}")
    if x.shape[1] != K:
        raise ValueError(f"x is {list(x.shape)} but K is {K}")
    cdef int64_t M = x.shape[0]
    out = _matmul_out(x, wp, bias, out, accumulate, M, N, K)
    cdef const float *px = _fp(x)
    cdef const uint8_t *pw = _u8p(wp)
    cdef const float *pb = _fp(bias) if bias is not None else NULL
    cdef float *po = _fpw(out)
    cdef int acc = accumulate, qt = qid
    cdef int status
    with nogil:
        status = vx_matmul_qp(px, pw, qt, pb, po, M, N, K, acc)
    _check(status, "matmul_qp")
    return out


def matmul_qp_many(x, products):
    """matmul_qp for several repacked matrices of the same K over one x in one
    call: ``products`` is a sequence of (wp, qtype, N, bias or None); returns
    their outputs [M, N] in order, each the same bits as matmul_qp's. x is
    quantized once and the products' tasks share one parallel region."""
    _arr(x, "x", np.float32, 2)
    cdef int count = len(products)
    if not 1 <= count <= VX_QP_MANY_MAX:
        raise ValueError(f"matmul_qp_many takes 1..{VX_QP_MANY_MAX} products, got {count}")
    cdef int64_t M = x.shape[0], K = x.shape[1]
    cdef vx_qp_product p[4]  # VX_QP_MANY_MAX (a Cython array needs a literal size; checked at import)
    outs = []
    cdef int i, qid
    cdef int64_t N
    for i in range(count):
        wp, qtype, N, bias = products[i]
        _arr(wp, "wp", np.uint8, 1)
        qid, size = _qp_dims(qtype, N, K)
        if wp.shape[0] != size:
            raise ValueError(f"repacked {qtype} [{N}, {K}] has {size} bytes, got {wp.shape[0]}")
        out = _matmul_out(x, wp, bias, None, False, M, N, K)
        p[i].wp = _u8p(wp)
        p[i].qtype = qid
        p[i].N = N
        p[i].bias = _fp(bias) if bias is not None else NULL
        p[i].out = _fpw(out)
        outs.append(out)
    cdef const float *px = _fp(x)
    cdef int status
    with nogil:
        status = vx_matmul_qp_many(px, M, K, p, count, 0)
    _check(status, "matmul_qp_many")
    return outs


def drop_file_pages(buf):
    """Drop the resident pages of a read-only file mapping (a view of a
    memory-mapped file: they re-read from the file if touched again). Only
    for such views: on anonymous memory the contents would be lost."""
    _arr(buf, "buf", np.uint8, -1)
    if buf.flags.writeable:
        raise ValueError("drop_file_pages takes a read-only view of a mapped file")
    cdef const uint8_t *p = _u8p(buf)
    cdef int64_t n = buf.nbytes
    with nogil:
        vx_drop_file_pages(p, n)


def stream_read(buf):
    """Read a C-contiguous byte buffer (size a multiple of 64) with all threads;
    returns an xor checksum. The read-only bandwidth roofline for benchmarks."""
    _arr(buf, "buf", np.uint8, 1)
    cdef int64_t n = buf.shape[0]
    if n == 0 or n % 64:
        raise ValueError(f"buffer size must be a positive multiple of 64, got {n}")
    cdef const uint8_t *p = _u8p(buf)
    cdef uint64_t r
    with nogil:
        r = vx_stream_read(p, n)
    return int(r)


def _attention_dims(q, k, v, int64_t q_pos0, int64_t k_pos0, int64_t window):
    """The checks every attention binding shares; returns (M, Hq, D, T, Hkv)."""
    M, Hq, D = q.shape
    T, Hkv = k.shape[0], k.shape[1]
    if k.shape[2] != D or v.shape[0] != T or v.shape[1] != Hkv or v.shape[2] != D:
        raise ValueError(f"shapes q {q.shape}, k {k.shape}, v {v.shape} do not match")
    if M == 0 or Hq == 0 or D == 0 or Hkv == 0:
        raise ValueError("empty attention")
    if Hq % Hkv:
        raise ValueError(f"{Hq} query heads are not a multiple of {Hkv} kv heads")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if T and (k_pos0 < 0 or q_pos0 < 0):
        raise ValueError("positions must be non-negative")
    return M, Hq, D, T, Hkv


def attention(q, k, v, out, int64_t q_pos0, int64_t k_pos0, int64_t window, float scale):
    """Causal sliding-window GQA attention of q[M,Hq,D] over a cache k/v[T,Hkv,D]."""
    _arr(q, "q", np.float32, 3)
    _arr(k, "k", np.float32, 3)
    _arr(v, "v", np.float32, 3)
    cdef int64_t M, Hq, D, T, Hkv
    M, Hq, D, T, Hkv = _attention_dims(q, k, v, q_pos0, k_pos0, window)
    out = _out(out, "out", (M, Hq, D))
    cdef const float *pq = _fp(q)
    cdef const float *pk = _fp(k) if T else pq
    cdef const float *pv = _fp(v) if T else pq
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_attention(pq, pk, pv, po, M, Hq, T, Hkv, D, q_pos0, k_pos0, window, scale)
    _check(status, "attention")
    return out


def rms_norm(x, weight, float eps, out=None):
    _arr(x, "x", np.float32, 2)
    _arr(weight, "weight", np.float32, 1)
    cdef int64_t M = x.shape[0], D = x.shape[1]
    if weight.shape[0] != D:
        raise ValueError(f"weight has {weight.shape[0]} entries, x rows have {D}")
    if M == 0 or D == 0:
        raise ValueError("empty rms_norm")
    if not eps > 0:
        raise ValueError("eps must be positive")
    out = _out(out, "out", (M, D))
    cdef const float *px = _fp(x)
    cdef const float *pw = _fp(weight)
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_rms_norm(px, pw, po, M, D, eps)
    _check(status, "rms_norm")
    return out


def rope(x, cos, sin, bint interleaved):
    """Rotate x[M,H,D] in place by angle tables cos/sin[M, D/2]."""
    _arr(x, "x", np.float32, 3)
    _arr(cos, "cos", np.float32, 2)
    _arr(sin, "sin", np.float32, 2)
    if not x.flags.writeable:
        raise ValueError("x is read-only")
    cdef int64_t M = x.shape[0], H = x.shape[1], D = x.shape[2]
    if D % 2 or D == 0 or M == 0 or H == 0:
        raise ValueError(f"rope needs a non-empty x with an even head dim, got {x.shape}")
    if cos.shape != (M, D // 2) or sin.shape != (M, D // 2):
        raise ValueError(f"cos/sin must be [{M}, {D // 2}], got {cos.shape} and {sin.shape}")
    cdef float *px = _fpw(x)
    cdef const float *pc = _fp(cos)
    cdef const float *ps = _fp(sin)
    cdef int il = interleaved
    cdef int status
    with nogil:
        status = vx_rope(px, pc, ps, M, H, D, il)
    _check(status, "rope")


def gelu(x, out=None):
    """Exact (erf) GELU, element-wise."""
    _arr(x, "x", np.float32)
    out = _out(out, "out", x.shape)
    cdef int64_t n = x.size
    if n == 0:
        return out
    cdef const float *px = _fp(x)
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_gelu(px, po, n)
    _check(status, "gelu")
    return out


def silu_mul(gate, up, out=None):
    """silu(gate) * up, element-wise."""
    _arr(gate, "gate", np.float32)
    _arr(up, "up", np.float32)
    if gate.shape != up.shape:
        raise ValueError(f"gate {gate.shape} and up {up.shape} differ")
    out = _out(out, "out", gate.shape)
    cdef int64_t n = gate.size
    if n == 0:
        return out
    cdef const float *pg = _fp(gate)
    cdef const float *pu = _fp(up)
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_silu_mul(pg, pu, po, n)
    _check(status, "silu_mul")
    return out


def conv1d_bf16(x, w, bias, int64_t stride, out=None):
    """Valid 1-D convolution of time-major x[T_in, Cin] (already padded) with w[Cout, Cin, Kw]."""
    _arr(x, "x", np.float32, 2)
    _arr(w, "w", np.uint16, 3)
    cdef int64_t T_in = x.shape[0], Cin = x.shape[1], Cout = w.shape[0], Kw = w.shape[2]
    if w.shape[1] != Cin:
        raise ValueError(f"x has {Cin} channels, w expects {w.shape[1]}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if Kw < 1 or T_in < Kw:
        raise ValueError(f"{T_in} input frames are fewer than the kernel size {Kw}")
    if bias is not None:
        _arr(bias, "bias", np.float32, 1)
        if bias.shape[0] != Cout:
            raise ValueError(f"bias has {bias.shape[0]} entries, expected {Cout}")
    cdef int64_t T_out = (T_in - Kw) // stride + 1
    out = _out(out, "out", (T_out, Cout))
    cdef const float *px = _fp(x)
    cdef const uint16_t *pw = _up(w)
    cdef const float *pb = _fp(bias) if bias is not None else NULL
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_conv1d_bf16(px, pw, pb, po, T_in, Cin, Cout, Kw, stride)
    _check(status, "conv1d_bf16")
    return out


def stft_power(signal, window, int64_t hop, int64_t n_frames, out=None):
    """|rfft(window * frame)|^2 of frames signal[f*hop : f*hop+n_fft], f < n_frames."""
    _arr(signal, "signal", np.float32, 1)
    _arr(window, "window", np.float32, 1)
    cdef int64_t n_fft = window.shape[0], n = signal.shape[0]
    if n_fft < 2:
        raise ValueError("window must have at least 2 samples")
    if hop < 1 or n_frames < 0:
        raise ValueError(f"bad hop {hop} / n_frames {n_frames}")
    if n_frames and (n_frames - 1) * hop + n_fft > n:
        raise ValueError(f"signal of {n} samples is too short for {n_frames} frames (hop {hop}, n_fft {n_fft})")
    out = _out(out, "out", (n_frames, n_fft // 2 + 1))
    if n_frames == 0:
        return out
    cdef const float *ps = _fp(signal)
    cdef const float *pw = _fp(window)
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_stft_power(ps, n, pw, n_fft, hop, n_frames, po)
    _check(status, "stft_power")
    return out


def log_mel(power, filters, float log_floor, out=None):
    """(max(log10(max(power @ filters, 1e-10)), log_floor) + 4) / 4."""
    _arr(power, "power", np.float32, 2)
    _arr(filters, "filters", np.float32, 2)
    cdef int64_t F = power.shape[0], n_freq = power.shape[1], n_mels = filters.shape[1]
    if filters.shape[0] != n_freq:
        raise ValueError(f"power has {n_freq} bins, filters expect {filters.shape[0]}")
    if n_mels == 0 or n_freq == 0:
        raise ValueError("empty filter bank")
    out = _out(out, "out", (F, n_mels))
    if F == 0:
        return out
    cdef const float *pp = _fp(power)
    cdef const float *pf = _fp(filters)
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_log_mel(pp, pf, po, F, n_freq, n_mels, log_floor)
    _check(status, "log_mel")
    return out


# ---- compact (bf16 / int8) KV cache ---------------------------------------------

cdef extern from "vx_kv.h":
    int VX_KV_BF16, VX_KV_INT8
    const char *vx_kv_kernels_name()
    int vx_kv_store(int kind, const float *src, void *dst, float *scales, int64_t rows, int64_t H, int64_t D) nogil
    int vx_attention_kv(int kind, const float *q, const void *k, const void *v, const float *k_scales,
                        const float *v_scales, float *out, int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D,
                        int64_t q_pos0, int64_t k_pos0, int64_t window, float scale) nogil


cdef int _kv_kind(a, str name) except -1:
    """uint16 arrays hold bfloat16 bits; int8 arrays are scaled per (row, head)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype == np.uint16:
        return VX_KV_BF16
    if a.dtype == np.int8:
        return VX_KV_INT8
    raise TypeError(f"{name} must be uint16 (bfloat16 bits) or int8, got {a.dtype}")


cdef void* _vp(a):
    """Address of a C-contiguous array's first byte (dtype already checked)."""
    cdef const unsigned char[::1] mv = a.reshape(-1).view(np.uint8)
    return <void*>&mv[0] if mv.shape[0] else NULL


def _kv_scales(s, str name, shape, bint writable):
    _arr(s, name, np.float32, 2)
    if s.shape != tuple(shape):
        raise ValueError(f"{name} has shape {s.shape}, expected {tuple(shape)}")
    if writable and not s.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return s


def kv_store(src, dst, scales=None):
    """Store fp32 rows src[n, H, D] into a compact cache slice dst[n, H, D]:
    uint16 dst gets bfloat16 (round to nearest even); int8 dst gets
    rint(x / s) with s = amax / 127 per (row, head) written to scales[n, H]."""
    _arr(src, "src", np.float32, 3)
    cdef int kind = _kv_kind(dst, "dst")
    if dst.ndim != 3 or not dst.flags.c_contiguous:
        raise ValueError(f"dst must be a 3-D C-contiguous array, got shape {dst.shape}")
    if dst.shape != src.shape:
        raise ValueError(f"dst has shape {dst.shape}, src {src.shape}")
    if not dst.flags.writeable:
        raise ValueError("dst is read-only")
    cdef int64_t n = src.shape[0], H = src.shape[1], D = src.shape[2]
    if H == 0 or D == 0:
        raise ValueError(f"empty heads: {src.shape}")
    if kind == VX_KV_INT8:
        if scales is None:
            raise ValueError("an int8 cache needs scales [n, H]")
        _kv_scales(scales, "scales", (n, H), True)
    elif scales is not None:
        raise ValueError("a bfloat16 cache has no scales")
    if n == 0:
        return
    cdef const float *ps = _fp(src)
    cdef void *pd = _vp(dst)
    cdef float *pscale = _fpw(scales) if scales is not None else NULL
    cdef int status
    with nogil:
        status = vx_kv_store(kind, ps, pd, pscale, n, H, D)
    _check(status, "kv_store")


def attention_kv(q, k, v, k_scales, v_scales, out, int64_t q_pos0, int64_t k_pos0, int64_t window, float scale):
    """``attention`` over a compact cache: k/v[T, Hkv, D] as uint16 (bfloat16
    bits; scales None) or int8 with k_scales/v_scales[T, Hkv] float32."""
    _arr(q, "q", np.float32, 3)
    cdef int kind = _kv_kind(k, "k")
    if _kv_kind(v, "v") != kind:
        raise TypeError(f"k ({k.dtype}) and v ({v.dtype}) must have the same dtype")
    for a, name in ((k, "k"), (v, "v")):
        if a.ndim != 3 or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a 3-D C-contiguous array, got shape {a.shape}")
    cdef int64_t M, Hq, D, T, Hkv
    M, Hq, D, T, Hkv = _attention_dims(q, k, v, q_pos0, k_pos0, window)
    if kind == VX_KV_INT8:
        if k_scales is None or v_scales is None:
            raise ValueError("an int8 cache needs k_scales and v_scales [T, Hkv]")
        _kv_scales(k_scales, "k_scales", (T, Hkv), False)
        _kv_scales(v_scales, "v_scales", (T, Hkv), False)
    elif k_scales is not None or v_scales is not None:
        raise ValueError("a bfloat16 cache has no scales")
    out = _out(out, "out", (M, Hq, D))
    cdef const float *pq = _fp(q)
    # (no conditional expression: Cython types its temporary as non-const void*)
    cdef const void *pk = pq
    cdef const void *pv = pq
    if T:
        pk = _vp(k)
        pv = _vp(v)
    cdef const float *pks = pq
    cdef const float *pvs = pq
    if kind == VX_KV_INT8 and T:
        pks = _fp(k_scales)
        pvs = _fp(v_scales)
    cdef float *po = _fpw(out)
    cdef int status
    with nogil:
        status = vx_attention_kv(kind, pq, pk, pv, pks, pvs, po, M, Hq, T, Hkv, D, q_pos0, k_pos0, window, scale)
    _check(status, "attention_kv")
    return out


def kv_kernels():
    """Which compact-KV attention kernel runs at the active ISA level."""
    return vx_kv_kernels_name().decode()


# ---- weight quantization (python -m voxtral quantize) ---------------------------

cdef extern from "vx_quantize.h":
    int VX_Q_ENONFINITE, VX_Q_EOVERFLOW
    int vx_quantize_rows(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t rows, int64_t cols) nogil
    int vx_quantize_rows_scalar(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t rows,
                                int64_t cols) nogil


def quantize_rows(x, str qtype, out=None, bint scalar=False):
    """GGML ``qtype`` blocks of the rows of x: float32 [rows, cols], or uint16
    [rows, cols] holding bfloat16 bits; returns (or fills) uint8 [rows, row
    bytes]. Threads as the kernels; ``scalar`` runs the scalar build whatever
    the CPU. ValueError for NaN / Inf input or a block scale beyond fp16."""
    if qtype not in _QTYPES:
        raise ValueError(f"unknown quantization type {qtype!r} (known: {', '.join(_QTYPES)})")
    qid, per, nbytes = _QTYPES[qtype]
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32 and x.dtype != np.uint16:
        raise TypeError(f"x must be float32 or uint16 (bfloat16 bits), got {x.dtype}")
    _arr(x, "x", x.dtype, 2)
    cdef int64_t rows = x.shape[0], cols = x.shape[1]
    if cols <= 0 or cols % per:
        raise ValueError(f"{qtype} needs a row length that is a multiple of {per}, got {cols}")
    shape = (rows, cols // per * nbytes)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    else:
        _arr(out, "out", np.uint8, 2)
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, expected {shape}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
    if rows == 0:
        return out
    cdef const void *px = _vp(x)
    cdef uint8_t *po = <uint8_t*>_vp(out)
    cdef int bf16 = x.dtype == np.uint16, qt = qid, status
    with nogil:
        if scalar:
            status = vx_quantize_rows_scalar(px, bf16, po, qt, rows, cols)
        else:
            status = vx_quantize_rows(px, bf16, po, qt, rows, cols)
    if status == VX_Q_ENONFINITE:
        raise ValueError("cannot quantize NaN or Inf values")
    if status == VX_Q_EOVERFLOW:
        raise ValueError(f"values too large for {qtype}: a block scale overflows fp16")
    _check(status, "quantize_rows")
    return out
