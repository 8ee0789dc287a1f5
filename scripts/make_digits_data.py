"""Build src/volt/examples/data/digits.npz, the data bundled with volt's digits example.

The data is the UCI ML hand-written digits set (1,797 images of 8x8 pixels, values 0..16, classes 0..9) as
scikit-learn ships it. volt bundles a copy so that the example runs offline and without scikit-learn, which is
needed only to run this script:

    pip install scikit-learn
    python scripts/make_digits_data.py            # writes src/volt/examples/data/digits.npz
    python scripts/make_digits_data.py out.npz    # or any other path

The file holds two arrays: ``images`` (uint8, shape (1797, 8, 8)) and ``labels`` (uint8, shape (1797,)).
"""
import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "volt" / "examples" / "data" / "digits.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT, help="where to write the .npz file")
    output = parser.parse_args().output

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    # The cast must be lossless: the source values are whole numbers in 0..16.
    assert np.array_equal(images, digits.images) and images.max() <= 16
    assert np.array_equal(labels, digits.target)

    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, images=images, labels=labels)
    print(f"wrote {output} ({output.stat().st_size} bytes): images {images.shape}, labels {labels.shape}")


if __name__ == "__main__":
    main()
