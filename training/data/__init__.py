"""The training data path: parquet shards -> uint8 batches, decoded in worker processes.

    shares.py   which rows a worker reads, in which order, its exact position (LoaderState)
    decode.py   decode + crop one image (torch-free: what the decode processes import)
    pool.py     the decode processes and their shared memory
    loader.py   ShardLoader: the stream, the chunks, the batches, prefetch
    images.py   uint8 batches -> normalised tensors on the device; the evaluation transform

Nothing is imported here, so a decode process loads Pillow and numpy only.
"""
