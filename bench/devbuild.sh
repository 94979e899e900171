set -e
python3 -c "import gguf" 2>/dev/null && echo has-gguf || echo no-gguf
cmake -S . -B /tmp/b -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(which python3) > /tmp/cm.log 2>&1 || { tail -30 /tmp/cm.log; exit 1; }
cmake --build /tmp/b -j16 > /tmp/bl.log 2>&1 || { grep -E "error|warning" /tmp/bl.log | head; exit 1; }
grep -c warning /tmp/bl.log || true
cp /tmp/b/_kernels*.so src/voxtral/
