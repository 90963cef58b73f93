#!/bin/bash
# fuzz.sh [SECONDS]: builds the frame codec fuzzer (libFuzzer, ASan + UBSan)
# into build-fuzz/ and runs it for SECONDS (default 30) on build-fuzz/corpus.
# Installs clang and the libFuzzer runtime (libclang-rt-14-dev) when missing.
# Exits non-zero if the fuzzer finds a crash; the input is kept in build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
out=build-fuzz
mkdir -p "$out/corpus"

fuzzer_runtime() {
  command -v clang++ >/dev/null || return 1
  local lib
  lib="$(clang++ -print-resource-dir)/lib/linux/libclang_rt.fuzzer-$(uname -m).a"
  [ -f "$lib" ]
}
if ! fuzzer_runtime; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "fuzz: installing clang and the libFuzzer runtime"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y clang libclang-rt-14-dev
  fuzzer_runtime || { echo "fuzz: libFuzzer runtime still missing" >&2; exit 1; }
fi

# shellcheck disable=SC2046  # pkg-config output is a list of flags
clang++ -std=c++20 -O1 -g -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I. transport/frame_codec.cc common/crc32c.cc test/fuzz/frame_fuzzer.cc \
  $(pkg-config --cflags --libs libzstd absl_status absl_strings) \
  -o "$out/frame_fuzzer"

# Seeds. The first byte is the fuzzer's control byte: bit 0 repairs the
# checksums, so the frames below are written with a zero CRC.
if [ -z "$(ls -A "$out/corpus")" ]; then
  python3 - "$out/corpus" <<'EOF'
import os, struct, subprocess, sys, tempfile
corpus = sys.argv[1]
def frame(payload, flags=0):
    return struct.pack('<IBI', len(payload), flags, 0) + payload
def rle(declared, size, byte=b'a'):  # one-block zstd frame, RLE block
    return (b'\x28\xb5\x2f\xfd\xa0' + struct.pack('<I', declared)
            + struct.pack('<I', 1 | 2 | size << 3)[:3] + byte)
text = b''.join(b'Received: from mx%d.example.org; id %d\r\n' % (i % 7, i)
                for i in range(300))
seeds = {
    'plain': b'\x01' + frame(b'hello') + frame(b''),
    'pieces': b'\x0f' + frame(text) + frame(b'x' * 300),
    'rle': b'\x01' + frame(rle(4096, 4096), 1),
    'bad_crc': b'\x00' + frame(b'hello'),
}
try:
    with tempfile.NamedTemporaryFile() as f:
        f.write(text)
        f.flush()
        z = subprocess.run(['zstd', '-q', '-1', '-c', f.name], check=True,
                           capture_output=True).stdout
    seeds['zstd'] = b'\x01' + frame(z, 1) + frame(b'after')
except (OSError, subprocess.CalledProcessError):
    pass
for name, data in seeds.items():
    with open(os.path.join(corpus, name), 'wb') as f:
        f.write(data)
EOF
fi

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$out/frame_fuzzer" -max_total_time="$seconds" -max_len=16384 \
  -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus"
