"""The official documentation's Python snippets, in the order the page gives them.

Run as ``python official_snippets.py HOST``: the only change from the official
page is the import (and the host of the local collector). After the
snippets, it prints one JSON line describing what it can see of the client.
"""

import json
import logging
import sys
import threading
from datetime import datetime

from trubrics_mp import Trubrics

API_KEY = "official-snippets-key"
HOST = sys.argv[1]

logging.basicConfig(format="%(process)d %(processName)s %(name)s %(levelname)s %(message)s")

# init: only the API key (and here the local host)
trubrics = Trubrics(api_key=API_KEY, host=HOST)

# logger_setLevel
trubrics.logger.setLevel(logging.DEBUG)

# logger_custom
your_cool_logger = logging.getLogger("your_cool_logger")
custom = Trubrics(api_key=API_KEY, host=HOST, logger=your_cool_logger)

# track_signup
trubrics.track(
    user_id="user_id",
    event="Sign up",
    properties={"plan": "pro"},
    timestamp=datetime.now(),
)

# track_llm
trubrics.track_llm(
    user_id="user_id",
    prompt="What is Trubrics?",
    assistant_id="gpt4o",
    generation="Trubrics is a product analytics platform for AI applications.",
    prompt_event_name="User prompt",
    generation_event_name="AI generation",
    properties={"$thread_id": "thread-1"},
    latency=2,
    thread_id="thread-1",
)

# close
trubrics.close()
custom.close()

print(
    json.dumps(
        {
            "threads": threading.active_count(),
            "attributes": {
                name: str(getattr(trubrics, name))
                for name in (
                    "host",
                    "api_key",
                    "flush_interval",
                    "flush_batch_size",
                    "flush_periodic_check",
                    "last_flush_time",
                    "is_flushing",
                )
            },
            "logger": trubrics.logger.name,
            "custom_logger": custom.logger.name,
            "repr": repr(trubrics),
        }
    ),
    flush=True,
)
