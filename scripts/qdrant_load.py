"""Load `clipforge index --export-npy DIR`'s files into a Qdrant collection and check that
Qdrant's nearest neighbours are the exact ones.

    pip install qdrant-client numpy
    python scripts/qdrant_load.py DIR                            # Qdrant's local mode, in memory
    python scripts/qdrant_load.py DIR --url http://node1:6333    # a Qdrant server or cluster

DIR holds embeddings.npy (f32 [N, E], unit rows) and entries.jsonl (row, id, path, member).
"""

import argparse
import json
import pathlib

import numpy as np
from qdrant_client import QdrantClient, models


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--url", help="a Qdrant server (default: local mode, in memory)")
    ap.add_argument("--collection", default="clipforge")
    ap.add_argument("--shards", type=int, default=1, help="shards of the collection (a cluster spreads them)")
    args = ap.parse_args()

    vectors = np.load(args.dir / "embeddings.npy")
    entries = [json.loads(line) for line in open(args.dir / "entries.jsonl")]
    assert len(entries) == len(vectors), f"{len(entries)} entries for {len(vectors)} vectors"

    client = QdrantClient(url=args.url) if args.url else QdrantClient(location=":memory:")
    if client.collection_exists(args.collection):
        client.delete_collection(args.collection)
    client.create_collection(
        args.collection,
        vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE),
        shard_number=args.shards,
    )
    client.upload_points(
        args.collection,
        points=[
            models.PointStruct(
                id=e["id"],
                vector=vectors[e["row"]].tolist(),
                payload={k: e[k] for k in ("path", "member") if k in e},
            )
            for e in entries
        ],
        batch_size=256,
    )
    print(f"{len(entries)} vectors of {vectors.shape[1]} in collection {args.collection!r}")

    # Each of a few indexed images as a query: Qdrant's top 10 against the exact top 10.
    rng = np.random.default_rng(0)
    agree = 0
    queries = rng.choice(len(entries), size=min(20, len(entries)), replace=False)
    for row in queries:
        exact = np.argsort(-(vectors @ vectors[row]))[:10]
        want = {entries[i]["id"] for i in exact}
        got = client.query_points(args.collection, query=vectors[row].tolist(), limit=10).points
        agree += len(want & {p.id for p in got})
    print(f"recall@10 of Qdrant against exact search: {agree / (10 * len(queries)):.3f} "
          f"over {len(queries)} queries")
    top = client.query_points(args.collection, query=vectors[queries[0]].tolist(), limit=3).points
    for p in top:
        print(f"  {p.score:.4f}  {p.payload['path']}{':' + p.payload['member'] if 'member' in p.payload else ''}")


if __name__ == "__main__":
    main()
