#!/usr/bin/env python3
"""Make reference outputs of the original TensorFlow musicnn MSD_musicnn model.

Usage (in a throwaway venv with ``tensorflow-cpu`` and ``librosa``; never in
the project's own environment)::

    python make_musicnn_fixture.py WHEEL_DIR DATA_DIR OUT.npz \
        [--vars VARS.npz] [--intermediates INTER.npz]

WHEEL_DIR  the unpacked ``musicnn`` package of the musicnn 0.1.0 wheel (it holds
           ``MSD_musicnn/.meta``, ``.index``, ``.data-00000-of-00001``).
DATA_DIR   a folder of ``<label>/*.mp3`` clips.
OUT.npz    the fixture written with ``np.savez_compressed``:
           mel (3,187,96) float16, logits (3,50), tags (3,50) sigmoid,
           penultimate (3,200), mean_pool (3,753), max_pool (3,753),
           pooled (3,1506) (the flattened, interleaved [max0, mean0, max1,
           mean1, ...] vector fed to the backend batch norm), sources (3,) str.

How the graph is loaded: the TF 1.12 MetaGraphDef is parsed, the
``_output_shapes`` attribute is deleted from every node (TF 2.x refuses some of
them), it is imported with ``tf.compat.v1.train.import_meta_graph`` in graph
mode, and the checkpoint is restored with the imported saver.  Inference runs
with ``is_training=False`` so every batch norm uses its moving statistics.

The three input patches (each 187 frames x 96 mel bands, log10(1 + 10000*mel),
rounded through float16 so the stored fixture is exact):
  a. first clip of the first label (alphabetical), from 15.0 s;
  b. first clip of the next label, from 5.0 s;
  c. np.random.default_rng(0).uniform(0, 3, (187, 96)).
Note: musicnn's own extractor casts the mel power to float16 *before* the log;
here the log is taken in float32 and only the final patch is rounded to float16.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Plain (non-oneDNN) kernels, for reproducible reference numbers.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np

SR, HOP, N_FFT, N_MELS, N_FRAMES = 16000, 256, 512, 96, 187
MODEL = "MSD_musicnn"

# Tensor names in the imported MSD_musicnn graph.
T = {
    "x": "model/Placeholder:0",  # (B,187,96) float32
    "is_training": "model/Placeholder_2:0",  # bool
    "logits": "model/dense_1/BiasAdd:0",  # (B,50)
    "tags": "model/Sigmoid:0",  # (B,50)
    "penultimate": "model/batch_normalization_10/batchnorm/add_1:0",  # (B,200)
    "mean_pool": "model/moments/Squeeze:0",  # (B,753,1)
    "max_pool": "model/Max:0",  # (B,753,1)
    "pooled": "model/Flatten/flatten/Reshape:0",  # (B,1506)
}

# Layer-by-layer activations, for debugging a port (NHWC; time is axis 1).
INTERMEDIATES = {
    "input_bn": "model/batch_normalization/cond/Merge:0",  # (B,187,96,1)
    "input_pad7": "model/Pad:0",  # (B,193,96,1)
    "timbral74_conv": "model/conv2d/Relu:0",  # (B,187,59,204)
    "timbral74": "model/Squeeze:0",  # (B,187,204)
    "timbral77_conv": "model/conv2d_1/Relu:0",  # (B,187,30,204)
    "timbral77": "model/Squeeze_1:0",  # (B,187,204)
    "temporal128_conv": "model/conv2d_2/Relu:0",  # (B,187,96,51)
    "temporal128": "model/Squeeze_2:0",  # (B,187,51)
    "temporal64_conv": "model/conv2d_3/Relu:0",
    "temporal64": "model/Squeeze_3:0",
    "temporal32_conv": "model/conv2d_4/Relu:0",
    "temporal32": "model/Squeeze_4:0",
    "frontend": "model/concat:0",  # (B,187,561)
    "midend_conv1_relu": "model/conv2d_5/Relu:0",  # (B,187,1,64)
    "midend1": "model/transpose:0",  # (B,187,64,1) bn_conv1_t
    "midend2": "model/Add:0",  # res_conv2
    "midend3": "model/Add_1:0",  # res_conv3
    "midend_concat": "model/concat_1:0",  # (B,187,753,1)
    "pooled_bn": "model/batch_normalization_9/batchnorm/add_1:0",  # (B,1506)
    "dense_relu": "model/dense/Relu:0",  # (B,200)
}


def mel_patch(path, start_s):
    """log10(1 + 10000 * mel) patch of N_FRAMES frames starting at start_s."""
    import librosa

    y, _ = librosa.load(path, sr=SR, mono=True)
    y = y[int(round(start_s * SR)) :]
    mel = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS, pad_mode="reflect").T.astype(np.float32)
    logmel = np.log10(np.float32(10000) * mel + np.float32(1)).astype(np.float32)
    if logmel.shape[0] < N_FRAMES:
        raise ValueError(f"{path}: only {logmel.shape[0]} frames after {start_s}s")
    return logmel[:N_FRAMES]


def pick_clips(data_dir):
    labels = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
    out = []
    for label, start in zip(labels[:2], (15.0, 5.0)):
        mp3 = sorted(f for f in os.listdir(os.path.join(data_dir, label)) if f.endswith(".mp3"))[0]
        out.append((f"{label}/{mp3}", start))
    return out


def load_graph(tf, ckpt_dir):
    from tensorflow.core.protobuf import meta_graph_pb2

    mg = meta_graph_pb2.MetaGraphDef()
    with open(os.path.join(ckpt_dir, ".meta"), "rb") as fh:
        mg.ParseFromString(fh.read())
    for node in mg.graph_def.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(mg, clear_devices=True)
    sess = tf.compat.v1.Session(graph=graph)
    saver.restore(sess, ckpt_dir.rstrip("/") + "/")
    return graph, sess


def dump_variables(tf, ckpt_dir, graph, npz_path):
    """Save every checkpoint variable; return their names in graph order."""
    # Open the checkpoint by its prefix: the "checkpoint" file names the author's path.
    reader = tf.compat.v1.train.NewCheckpointReader(ckpt_dir.rstrip("/") + "/")
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    graph_order = [op.name for op in graph.get_operations() if op.type in ("VariableV2", "VarHandleOp")]
    names = [n for n in graph_order if n in shapes] + sorted(set(shapes) - set(graph_order))
    arrays = {n: reader.get_tensor(n) for n in names}
    np.savez(npz_path, **arrays)
    with open(os.path.splitext(npz_path)[0] + ".txt", "w") as fh:
        for n in names:
            fh.write(f"{n}\t{tuple(shapes[n])}\t{dtypes[n].name}\n")
    return names, shapes


def check_same_padding(sess, graph, mel):
    """Recompute each 'same' temporal conv with explicit zero padding along time.

    Returns {kernel_len: [(pad_before, pad_after, max_abs_err), ...]} for the two
    candidate splits of the kernel_len-1 padding (smaller half first / last).
    """
    import tensorflow as tf

    feed = {graph.get_tensor_by_name(T["x"]): mel, graph.get_tensor_by_name(T["is_training"]): False}
    xbn = sess.run(graph.get_tensor_by_name(INTERMEDIATES["input_bn"]), feed)
    out = {}
    for conv in ("conv2d_2", "conv2d_3", "conv2d_4"):
        k, b, ref = sess.run(
            [graph.get_tensor_by_name(f"{conv}/kernel:0"), graph.get_tensor_by_name(f"{conv}/bias:0"), graph.get_tensor_by_name(f"model/{conv}/Relu:0")], feed
        )
        kt = k.shape[0]
        rows = []
        for before in sorted({(kt - 1) // 2, kt // 2}):
            after = kt - 1 - before
            xp = np.pad(xbn, [(0, 0), (before, after), (0, 0), (0, 0)])
            with tf.Graph().as_default(), tf.compat.v1.Session() as s2:
                y = s2.run(tf.nn.relu(tf.nn.conv2d(xp, k, 1, "VALID") + b))
            rows.append((before, after, float(np.abs(y - ref).max())))
        out[kt] = rows
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("wheel_dir")
    ap.add_argument("data_dir")
    ap.add_argument("out_npz")
    ap.add_argument("--vars", help="also dump all checkpoint variables to this .npz (+ .txt)")
    ap.add_argument("--intermediates", help="also save patch-a activations to this .npz")
    ap.add_argument("--check-padding", action="store_true", help="verify the time padding TF used for the 'same' temporal convs")
    args = ap.parse_args(argv)

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    ckpt_dir = os.path.join(args.wheel_dir, MODEL)
    graph, sess = load_graph(tf, ckpt_dir)
    print("tensorflow", tf.__version__)

    if args.vars:
        names, shapes = dump_variables(tf, ckpt_dir, graph, args.vars)
        print(f"{len(names)} variables -> {args.vars}")

    clips = pick_clips(args.data_dir)
    patches = [mel_patch(os.path.join(args.data_dir, rel), start) for rel, start in clips]
    patches.append(np.random.default_rng(0).uniform(0.0, 3.0, (N_FRAMES, N_MELS)))
    mel16 = np.stack(patches).astype(np.float16)
    mel = mel16.astype(np.float32)
    sources = np.array([f"{rel} @ {start:.1f}s" for rel, start in clips] + ["uniform rng0"])

    x = graph.get_tensor_by_name(T["x"])
    is_tr = graph.get_tensor_by_name(T["is_training"])
    keys = ["logits", "tags", "penultimate", "mean_pool", "max_pool", "pooled"]
    fetch = [graph.get_tensor_by_name(T[k]) for k in keys]
    res = dict(zip(keys, sess.run(fetch, {x: mel, is_tr: False})))
    res["mean_pool"] = np.squeeze(res["mean_pool"], 2)
    res["max_pool"] = np.squeeze(res["max_pool"], 2)

    # Consistency: pooled is interleaved max/mean; patches are batch-independent.
    assert np.array_equal(res["pooled"][:, 0::2], res["max_pool"])
    assert np.array_equal(res["pooled"][:, 1::2], res["mean_pool"])
    assert np.allclose(1 / (1 + np.exp(-res["logits"])), res["tags"], atol=1e-6)
    for i in range(len(mel)):
        single = sess.run(fetch, {x: mel[i : i + 1], is_tr: False})
        diff = max(float(np.abs(np.squeeze(s[0]) - np.squeeze(res[k][i])).max()) for k, s in zip(keys, single))
        print(f"patch {i} alone vs in batch: max abs diff {diff:.3g}")
        assert diff < 1e-4, diff

    out = {"mel": mel16, "sources": sources}
    out.update({k: np.asarray(v, np.float32) for k, v in res.items()})
    os.makedirs(os.path.dirname(os.path.abspath(args.out_npz)), exist_ok=True)
    np.savez_compressed(args.out_npz, **out)
    print(f"wrote {args.out_npz} ({os.path.getsize(args.out_npz)} bytes)")
    for i, s in enumerate(sources):
        print(f"  {s}: top tag idx {np.argsort(-res['tags'][i])[:5].tolist()}")

    if args.intermediates:
        inter = sess.run({k: graph.get_tensor_by_name(v) for k, v in INTERMEDIATES.items()}, {x: mel[:1], is_tr: False})
        inter = {k: np.asarray(v[0], np.float32) for k, v in inter.items()}
        inter["mel"] = mel[0]
        np.savez_compressed(args.intermediates, **inter)
        print(f"wrote {args.intermediates}")

    if args.check_padding:
        for kt, rows in check_same_padding(sess, graph, mel[:1]).items():
            for before, after, err in rows:
                print(f"'same' conv kernel {kt}x1: pad_before={before} pad_after={after} -> max abs err vs TF {err:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
