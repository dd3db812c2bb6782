"""The baseline: an aiohttp handler that only parses the JSON body and answers 202, on
asyncio's own loop (the issue's baseline), or on uvloop with a second argument `uvloop`."""

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
    loop = None
    if sys.argv[2:] == ["uvloop"]:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=loop)


if __name__ == "__main__":
    main()
