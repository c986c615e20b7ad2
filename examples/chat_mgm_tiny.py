"""Chat with `mgm-tiny` from Python: a multi-turn session with an image, then an image request.

`mgm-tiny` has random weights, so its words are noise and it writes no `<h>...</h>` image prompt;
the request then reports "no image prompt" instead of failing. `vlmkit chat --model mgm-tiny` is
the same session on the command line.
"""

import torch
from PIL import Image, ImageDraw

import vlmkit
from vlmkit.chat import ChatSession

torch.manual_seed(0)
model = vlmkit.build("mgm-tiny").eval()
image = Image.new("RGB", (120, 90), "white")
ImageDraw.Draw(image).ellipse((30, 20, 90, 70), fill="blue")

session = ChatSession(model, bridge=vlmkit.create("bridge", "prompt-only"), max_new_tokens=12)
session.add_image(image)
print("model>", repr(session.ask("What is in the picture?")))
print("model>", repr(session.ask("What colour is it?")))
result, paths = session.generate("Draw it bigger.")
print(result.message, paths)
assert len(session.messages) == 6 and session.messages[0]["content"].startswith("<image>\n")
