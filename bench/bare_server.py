"""The baseline: an aiohttp handler that only parses the JSON body and answers 202."""

import json
import sys

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    data = json.loads(await request.read())
    return web.json_response({"accepted": len(data["alerts"]), "duplicates": 0}, status=202)


def main() -> None:
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/alerts", receive)
    app.router.add_get("/-/ready", lambda r: web.Response(text="Ready.\n"))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
