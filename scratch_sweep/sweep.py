import os, sys, time, json, torch
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
_orig = torch.use_deterministic_algorithms
torch.use_deterministic_algorithms = lambda mode, **k: _orig(mode, warn_only=True)
from must_engine.sandbox import world, tiny_clip as tc
import open_clip
dev = "cuda" if torch.cuda.is_available() else "cpu"
runs = json.loads(open(sys.argv[1]).read())
t = time.time()
cache = {}
def data(n, style, seed):
    k = (n, style, seed)
    if k not in cache: cache[k] = world.make_split(n, style, seed, 64)
    return cache[k]
evs = {s: data(100, s, 7) for s in ["source", "target"]}
print("render", round(time.time() - t), flush=True)
pre = lambda im: tc.normalise(tc.images_to_tensor([im]))[0]
for r in runs:
    name = r.pop("name"); n = r.pop("n", 600); vis = r.pop("vis", {}); txt = r.pop("txt", {})
    cfg = tc.tiny_clip_config(); cfg["vision_cfg"].update(vis); cfg["text_cfg"].update(txt)
    if "embed_dim" in r: cfg["embed_dim"] = r.pop("embed_dim")
    train = data(n, "source", 1000)
    steps = r.pop("steps", 600); bs = r.get("batch_size", 128)
    r["epochs"] = max(1, round(steps * bs / len(train)))
    tok = open_clip.get_tokenizer(context_length=cfg["text_cfg"]["context_length"])
    curve = []
    def cb(ep, m):
        if (ep + 1) % max(1, r["epochs"] // 4) == 0 or ep == r["epochs"] - 1:
            curve.append((ep + 1, *[round(tc.zero_shot_accuracy(m, tok, pre, e, world.CLASS_NAMES), 3) for e in evs.values()]))
    t0 = time.time()
    m = tc.pretrain_tiny_clip(train, world.CLASS_NAMES, seed=0, settings=tc.PretrainSettings(**r), config=cfg, device=dev, on_epoch_end=cb)
    print(name, r, vis, "scale %.1f" % m.logit_scale.exp().item(), "time %.0f" % (time.time() - t0), curve, flush=True)
