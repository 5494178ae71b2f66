"""ww's engine: how the mergers of `ww.mergers` run on banks larger than memory.

- `streaming`: a bank read as blocks of ``[T, n]`` entries, mapped by worker threads (`TaskStream`).
- `selection`: exact order statistics (the k-th largest |τ| of a whole task vector) without a sort.
- `speculation`: one-pass forms of global top-k mergers on resident banks, corrected where a
  sample's guess was wrong.
- `compiling`: block kernels with an eager reference and a ``torch.compile``-d twin (`ww.kernels`
  is the public switch).
- `blockops`: small block operations shared by mergers and poolings.
- `counter_rng`: position-derived random streams, independent of how a bank is cut into blocks.
- `bank_file`: the on-disk bank format (`ww.save_bank`, `ww.open_bank`, `ww.BankWriter`).

Nothing here changes what a merger computes (docs/METHODS.md §2 defines that); it only decides how
the entries are visited.
"""
