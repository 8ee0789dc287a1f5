"""A small transformer language model and the WikiText-2 style dataset it trains on.

No downloads: when `<data_dir>/wikitext-2.txt` (WikiText-2's training text) is not there, `WikiText2` writes and uses
a generated corpus instead: about 210,000 words over a 1,000-word vocabulary, with word-to-word regularities a
model can learn, the same on every machine. Put the real file in place to train on WikiText-2 itself.
"""
import itertools
import math
import os
import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from volt.module import LightningModule

GENERATED_FILE = "wikitext-2-volt-generated.txt"


class Transformer(nn.Module):
    """Token embedding + positional encoding -> nn.Transformer (encoder-decoder, causal target mask) -> next-token
    log-probabilities, flattened to (batch * length, vocab_size)."""

    def __init__(self, vocab_size: int = 33278, ninp: int = 200, nhead: int = 2, nhid: int = 200, nlayers: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.embedding = nn.Embedding(vocab_size, ninp)
        self.transformer = nn.Transformer(d_model=ninp, nhead=nhead, num_encoder_layers=nlayers,
                                          num_decoder_layers=nlayers, dim_feedforward=nhid, dropout=dropout,
                                          batch_first=True)
        self.decoder = nn.Linear(ninp, vocab_size)
        self.ninp = ninp
        self.vocab_size = vocab_size
        self.src_mask: Optional[Tensor] = None

    def generate_square_subsequent_mask(self, size: int) -> Tensor:
        """0 on and below the diagonal, -inf above: position i sees positions <= i only."""
        return torch.triu(torch.full((size, size), float("-inf")), diagonal=1)

    def forward(self, inputs: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        length = inputs.size(1)
        if self.src_mask is None or self.src_mask.size(0) != length:
            self.src_mask = self.generate_square_subsequent_mask(length).to(inputs.device)
        if mask is None:
            mask = self.generate_square_subsequent_mask(length).to(inputs.device)
        scale = math.sqrt(self.ninp)
        src = self.pos_encoder(self.embedding(inputs) * scale)
        tgt = self.pos_encoder(self.embedding(target) * scale)
        output = self.decoder(self.transformer(src, tgt, tgt_mask=mask))
        return F.log_softmax(output, dim=-1).view(-1, self.vocab_size)


class PositionalEncoding(nn.Module):
    """Sinusoidal position encodings (computed on first use, on the input's device), then dropout.

    As in Lightning's demo, the encoding added is the one of position `sequence length`, to every token; kept so
    that runs match Lightning's for the same seed."""

    def __init__(self, dim: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.dim = dim
        self.max_len = max_len
        self.pe: Optional[Tensor] = None  # not a buffer or parameter: DDP requires every parameter to be used

    def forward(self, x: Tensor) -> Tensor:
        if self.pe is None:
            self.pe = self._encodings(x.device)
        return self.dropout(x + self.pe[:, x.size(1)])

    def _encodings(self, device: torch.device) -> Tensor:
        position = torch.arange(self.max_len, dtype=torch.float, device=device).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, self.dim, 2, device=device).float() * (-math.log(10000.0) / self.dim))
        encodings = torch.zeros(self.max_len, self.dim, device=device)
        encodings[:, 0::2] = torch.sin(position * frequency)
        encodings[:, 1::2] = torch.cos(position * frequency)
        return encodings.unsqueeze(0)


class Dictionary:
    """Word <-> index, in order of first appearance."""

    def __init__(self) -> None:
        self.word2idx: Dict[str, int] = {}
        self.idx2word: List[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


def tokenize(path: Union[str, Path]) -> Tuple[Tensor, Dictionary]:
    """A text file as one int64 tensor of word indices (each line ends with "<eos>") and its dictionary."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenize: {path} does not exist.")
    dictionary = Dictionary()
    ids: List[int] = []
    with open(path, encoding="utf8") as file:
        for line in file:
            ids.extend(dictionary.add_word(word) for word in line.split() + ["<eos>"])
    return torch.tensor(ids, dtype=torch.int64), dictionary


class WikiText2(Dataset):
    """Blocks of `block_size` word indices and the same block shifted by one word (the next-word targets), from
    `<data_dir>/wikitext-2.txt`, or from a generated corpus when that file is missing and `download` is True (see the
    module docstring; nothing is downloaded)."""

    def __init__(self, data_dir: Path = Path("./data"), block_size: int = 35, download: bool = True) -> None:
        super().__init__()
        data_dir = Path(data_dir)
        self.path = data_dir / "wikitext-2.txt"
        if not self.path.exists():
            self.path = data_dir / GENERATED_FILE
            if download:
                self.download(self.path)
        self.data, self.dictionary = tokenize(self.path)
        self.block_size = block_size

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)

    def __len__(self) -> int:
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        start = index * self.block_size
        return self.data[start:start + self.block_size], self.data[start + 1:start + self.block_size + 1]

    @staticmethod
    def download(destination: Path) -> None:
        """Write the generated corpus to `destination` (once; an existing file is kept)."""
        if os.path.exists(destination):
            return
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        temporary = f"{destination}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf8") as file:
            file.write(generate_corpus())
        os.replace(temporary, destination)  # ranks generating at once all end with one complete file


def generate_corpus(lines: int = 7000, vocabulary: int = 1000, seed: int = 0) -> str:
    """A deterministic text of `lines` sentences over `vocabulary` made-up words. Each word tends to be followed by
    one of a few words of its own, and word frequencies fall off as in natural language, so a language model has
    something to learn. Uses its own random generator: the global RNG state is left alone."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: List[str] = []
    while len(words) < vocabulary:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
        if word not in words:
            words.append(word)
    frequent = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(vocabulary)))  # Zipf's law
    followers = [rng.choices(range(vocabulary), cum_weights=frequent, k=6) for _ in range(vocabulary)]
    text = []
    for _ in range(lines):
        current = rng.choices(range(vocabulary), cum_weights=frequent)[0]
        sentence = [words[current]]
        for _ in range(rng.randint(12, 48)):
            follow = rng.random() < 0.8
            current = rng.choice(followers[current]) if follow else rng.choices(range(vocabulary), cum_weights=frequent)[0]
            sentence.append(words[current])
        text.append(" ".join(sentence) + " .")
    return "\n".join(text) + "\n"


class LightningTransformer(LightningModule):
    """Transformer trained on WikiText2 with SGD (lr 0.1) and the negative log-likelihood of the next word."""

    def __init__(self, vocab_size: int = 33278) -> None:
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size)

    def forward(self, inputs: Tensor, target: Tensor) -> Tensor:
        return self.model(inputs, target)

    def training_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, target = batch
        return F.nll_loss(self(inputs, target), target.view(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1)

    def prepare_data(self) -> None:
        WikiText2(download=True)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(WikiText2())
