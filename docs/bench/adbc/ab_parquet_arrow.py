"""A/B: Arrow and Parquet of messages, the build before this session (/tmp/wt-old) and now
(/tmp/wt), same rounds, against COPY csv."""
import asyncio, os, pathlib, statistics, subprocess, sys, time, json, socket
import httpx, asyncpg
sys.path.insert(0, "/tmp/wt")
from app import embedded, auth

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

secret = os.urandom(24).hex()
with embedded.held(pathlib.Path("/tmp/wt/.data")) as server:
    url = embedded.url(server)
    procs = {}
    for name, root in (("old", "/tmp/wt-old"), ("new", "/tmp/wt")):
        port = free()
        env = {**os.environ, "PYTHONPATH": root, "DATABASE_URL": url, "JWT_SECRET": secret, "PORT": str(port), "ENVIRONMENT": "development", "LOG_LEVEL": "warning", "DATASETS_FILE": "/tmp/bench-final-ds/datasets.toml"}
        procs[name] = (subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port)
    token = auth.issue(secret, "ab", 3600)
    h = {"Authorization": f"Bearer {token}"}
    for name, (p, port) in procs.items():
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200: break
            except Exception: pass
            time.sleep(0.1)
    async def copy():
        conn = await asyncpg.connect(url)
        n = 0
        async def sink(b):
            nonlocal n; n += len(b)
        t = time.perf_counter(); await conn.copy_from_query("SELECT * FROM messages ORDER BY id", output=sink, format="csv"); d = time.perf_counter() - t
        await conn.close(); return d
    res = {}
    with httpx.Client(timeout=120) as c:
        for r in range(7):
            for fmt in ("arrows", "parquet"):
                for name, (p, port) in procs.items():
                    t = time.perf_counter()
                    with c.stream("GET", f"http://127.0.0.1:{port}/datasets/messages.{fmt}", headers=h) as resp:
                        assert resp.status_code == 200, resp.status_code
                        for _ in resp.iter_raw(): pass
                    d = time.perf_counter() - t
                    if r: res.setdefault(f"{name} {fmt}", []).append(d)
            d = asyncio.run(copy())
            if r: res.setdefault("COPY csv", []).append(d)
    for p, _ in procs.values(): p.terminate(); p.wait()
    base = statistics.median(res["COPY csv"])
    print(json.dumps({k: [round(statistics.median(v), 3), round(statistics.median(v) / base, 2)] for k, v in res.items()}, indent=1))
