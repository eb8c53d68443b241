"""Writes seeds/tiny: a 2-byte length, a config.json of a one-level UNet2DModel
(4 channels) and its complete f16 weights, so the fuzzer starts from an input
that loads and runs."""
import json, struct, random

cfg = {"_class_name": "UNet2DModel", "block_out_channels": [4], "layers_per_block": 1,
       "norm_num_groups": 2, "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
       "in_channels": 1, "out_channels": 1, "attention_head_dim": None}
t = []
def lin(n, i, o): t.extend([(n + ".weight", [o, i]), (n + ".bias", [o])])
def conv(n, i, o, k=3): t.extend([(n + ".weight", [o, i, k, k]), (n + ".bias", [o])])
def norm(n, c): t.extend([(n + ".weight", [c]), (n + ".bias", [c])])
def resnet(n, i, o):
    norm(n + ".norm1", i); conv(n + ".conv1", i, o); lin(n + ".time_emb_proj", 16, o)
    norm(n + ".norm2", o); conv(n + ".conv2", o, o)
    if i != o: conv(n + ".conv_shortcut", i, o, 1)
lin("time_embedding.linear_1", 4, 16); lin("time_embedding.linear_2", 16, 16)
conv("conv_in", 1, 4)
resnet("down_blocks.0.resnets.0", 4, 4)
resnet("mid_block.resnets.0", 4, 4); resnet("mid_block.resnets.1", 4, 4)
norm("mid_block.attentions.0.group_norm", 4)
for p in ["to_q", "to_k", "to_v", "to_out.0"]: lin("mid_block.attentions.0." + p, 4, 4)
resnet("up_blocks.0.resnets.0", 8, 4); resnet("up_blocks.0.resnets.1", 8, 4)
norm("conv_norm_out", 4); conv("conv_out", 4, 1)
random.seed(0)
header, data = {}, b""
for name, shape in t:
    n = 1
    for s in shape: n *= s
    blob = b"".join(struct.pack("<e", random.uniform(-0.5, 0.5)) for _ in range(n))
    header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
    data += blob
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
st = struct.pack("<Q", len(h)) + h + data
c = json.dumps(cfg).encode()
open("seeds/tiny", "wb").write(struct.pack("<H", len(c)) + c + st)
print(len(c) + len(st) + 2, "bytes")
