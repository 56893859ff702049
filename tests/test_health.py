import httpx

from tests.support import execute, free_port, run, start_server, stop_server


def test_healthz_needs_no_token(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_datasets_and_pool(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["datasets"] == 1
    assert set(body["pool"]) == {"size", "idle", "in_use"}


def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    # Nothing listens on this port: the service must still start, and say it is not ready.
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    server = start_server(url, bare=True)
    try:
        response = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"]
        assert "database" in response.json()["detail"]
        # and a data route says 503 too, not 500, and does not hang
        data = httpx.get(f"{server.base_url}/chunked", headers=server.headers(), timeout=10)
        assert data.status_code == 503
        assert data.headers["content-type"] == "application/problem+json"
    finally:
        stop_server(server)


def test_readyz_is_503_naming_a_dataset_that_became_unreadable(fresh_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database("rowstream_vanishing")
    run(execute(url, "CREATE TABLE t (id int PRIMARY KEY)"))
    (tmp_path / "datasets.toml").write_text('[datasets.t]\ntable = "t"\n')
    server = start_server(
        url, DATASETS_FILE=str(tmp_path / "datasets.toml"), READINESS_CACHE_SECONDS="0"
    )
    try:
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        run(execute(url, "DROP TABLE t"))
        response = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "dataset 't' is not readable" in response.json()["detail"]
    finally:
        stop_server(server)


def test_docs_work_offline_every_asset_is_local_and_answers(client: httpx.Client) -> None:
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
