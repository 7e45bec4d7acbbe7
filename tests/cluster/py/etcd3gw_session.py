"""One session of the python etcd3gw client (it speaks only etcd's JSON gateway) against the
endpoint given as host:port; prints one line per step. The Rust test runs it against raftkv
and against a real etcd and compares the output."""

import sys
import threading

import etcd3gw

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3gw.client(host=host, port=int(port), timeout=10)


def say(what, value):
    print(f"{what}: {value!r}", flush=True)


say("api path", client.api_path)
say("members", len(client.members()))
say("put a", client.put("gw/a", "1"))
say("put b", client.put("gw/b", "2"))
say("get a", client.get("gw/a"))
say("get missing", client.get("gw/none"))
say(
    "get prefix",
    sorted((v, m["key"], m["version"]) for v, m in client.get_prefix("gw/")),
)
say("create a (exists)", client.create("gw/a", "x"))
say("create c", client.create("gw/c", "3"))
say("replace a 1->9", client.replace("gw/a", "1", "9"))
say("replace a 1->8", client.replace("gw/a", "1", "8"))
say("get a", client.get("gw/a"))
txn = client.transaction(
    {
        "compare": [
            {
                "key": etcd3gw.utils._encode("gw/b"),
                "result": "EQUAL",
                "target": "VALUE",
                "value": etcd3gw.utils._encode("2"),
            }
        ],
        "success": [
            {
                "request_put": {
                    "key": etcd3gw.utils._encode("gw/d"),
                    "value": etcd3gw.utils._encode("4"),
                }
            }
        ],
        "failure": [],
    }
)
say("txn succeeded", txn.get("succeeded", False))
say("get d", client.get("gw/d"))

lease = client.lease(ttl=60)
say("lease ttl", 55 <= lease.ttl() <= 60)
say("put with lease", client.put("gw/leased", "v", lease=lease))
say("lease keys", [k.decode() for k in lease.keys()])
say("lease refresh", lease.refresh())
say("lease revoke", lease.revoke())
say("leased key after revoke", client.get("gw/leased"))

events = []
done = threading.Event()
iterator, cancel = client.watch_prefix("gw/w")


def collect():
    for event in iterator:
        events.append(
            (
                event.get("type", "PUT"),
                event["kv"]["key"],  # etcd3gw decodes keys and values itself
                event["kv"].get("value", b""),
            )
        )
        if len(events) == 3:
            done.set()
            return


thread = threading.Thread(target=collect, daemon=True)
thread.start()
# The watch is created by the time the first answer is read; give it a moment.
threading.Event().wait(1.0)
client.put("gw/w1", "x")
client.put("gw/w2", "y")
client.delete("gw/w1")
say("watch events in time", done.wait(15))
cancel()
say("watched", events)
say("delete prefix", client.delete_prefix("gw/"))
say("get prefix after", client.get_prefix("gw/"))
