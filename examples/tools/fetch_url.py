"""A command tool with a network. It declares "network": true, so it runs in
its own empty network namespace and reaches the outside only through the
tool-worker's egress proxy (found in HTTP_PROXY/HTTPS_PROXY, as most HTTP
clients do), which refuses loopback, private ranges and the cloud metadata
service and says why."""
import json
import sys
import urllib.error
import urllib.request


def main():
    url = json.load(sys.stdin)["url"]
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read(20000).decode("utf-8", "replace")
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(2000).decode("utf-8", "replace"), e.code
    except OSError as e:
        json.dump({"status": "error", "content": f"cannot fetch {url}: {e}"}, sys.stdout)
        return
    result = "success" if status < 400 else "error"
    json.dump({"status": result, "content": f"HTTP {status}\n\n{body}"}, sys.stdout)


if __name__ == "__main__":
    main()
