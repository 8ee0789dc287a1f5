"""An MNIST-shaped dataset and datamodule that need no download.

`MNIST` has MNIST's layout (28x28 grey images of digits 0-9; 60,000 training and 10,000 test items) but is made from
the handwritten digits bundled with volt (`volt/examples/data`): each 8x8 digit is upscaled to 20x20 and centred in
28x28 as MNIST's are, and the items past the 1,797 originals are those digits shifted by up to two pixels, the same
shift for the same index on every machine. Training items come from the first 1,497 digits, test items from the
other 300. It is a stand-in for trying programs out, not MNIST: accuracies differ from MNIST's.
"""
import os
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, random_split

from volt.datamodule import LightningDataModule

_DATASETS_PATH = "./data"
_TRAIN_DIGITS = 1497  # the first 1,497 bundled digits feed the training items, the remaining 300 the test items
_SIZES = {True: 60000, False: 10000}


def _images() -> Tuple[Tensor, Tensor]:
    """All bundled digits as uint8 28x28 images (0..255) and their labels."""
    from volt.examples.digits import MAX_PIXEL_VALUE, load_digits

    images, labels = load_digits()
    upscaled = F.interpolate(images.float().unsqueeze(1) / MAX_PIXEL_VALUE, size=(20, 20), mode="bilinear",
                             align_corners=False)
    padded = F.pad(upscaled, (4, 4, 4, 4)).squeeze(1)
    return (padded.clamp(0, 1) * 255).round().to(torch.uint8), labels.long()


class MNIST(Dataset):
    """(image, label) pairs in MNIST's layout (see the module docstring). Without `transform`, an image is a float
    tensor of shape (1, 28, 28), standardised with `normalize` (mean, std; None leaves values in 0..1); with
    `transform`, the transform gets a PIL image, as torchvision's MNIST gives (e.g. `transforms.ToTensor()`).
    `root` and `download` are accepted for compatibility; nothing is read from or written to disk."""

    def __init__(self, root: str = _DATASETS_PATH, train: bool = True, normalize: Optional[tuple] = (0.1307, 0.3081),
                 download: bool = True, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, **kwargs: Any) -> None:
        super().__init__()
        self.root = root
        self.train = train
        self.normalize = normalize
        self.transform = transform
        self.target_transform = target_transform
        images, labels = _images()
        self._images = images[:_TRAIN_DIGITS] if train else images[_TRAIN_DIGITS:]
        self.targets_of_digits = labels[:_TRAIN_DIGITS] if train else labels[_TRAIN_DIGITS:]

    def __len__(self) -> int:
        return _SIZES[self.train]

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"MNIST index {index} is out of range for {len(self)} items.")
        digit = index % len(self._images)
        image = self._images[digit]
        if index >= len(self._images):  # a copy of a digit, shifted by (-2..2, -2..2) pixels
            shift = (index // len(self._images)) % 25
            image = torch.roll(image, shifts=(shift // 5 - 2, shift % 5 - 2), dims=(0, 1))
        target = int(self.targets_of_digits[digit])
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.transform is not None:
            from PIL import Image

            return self.transform(Image.fromarray(image.numpy(), mode="L")), target
        tensor = image.float().div(255).unsqueeze(0)
        if self.normalize is not None and len(self.normalize) == 2:
            tensor = (tensor - self.normalize[0]) / self.normalize[1]
        return tensor, target


class MNISTDataModule(LightningDataModule):
    """MNIST (the stand-in above): `val_split` training items held out for validation (the same ones for a given
    `seed`), the test split for testing. With torchvision installed, images go through `transforms.ToTensor()` (and
    `Normalize((0.5,), (0.5,))` with `normalize=True`)."""

    name = "mnist"

    def __init__(self, data_dir: str = _DATASETS_PATH, val_split: int = 5000, num_workers: int = 16,
                 normalize: bool = False, seed: int = 42, batch_size: int = 32) -> None:
        super().__init__()
        if num_workers and os.name == "nt":
            num_workers = 0  # worker processes re-import the script on Windows; keep loading in-process
        self.data_dir = data_dir
        self.val_split = val_split
        self.num_workers = num_workers
        self.normalize = normalize
        self.seed = seed
        self.batch_size = batch_size

    @property
    def num_classes(self) -> int:
        return 10

    def prepare_data(self) -> None:
        """Nothing to download."""

    def setup(self, stage: str) -> None:
        dataset = MNIST(self.data_dir, train=True, download=False, **self._transform())
        self.dataset_train, self.dataset_val = random_split(
            dataset, [len(dataset) - self.val_split, self.val_split], generator=torch.Generator().manual_seed(42))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(MNIST(self.data_dir, train=False, download=False, **self._transform()), shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=True, pin_memory=True)

    def _transform(self) -> dict:
        transform = self.default_transforms
        return {"transform": transform} if transform is not None else {}

    @property
    def default_transforms(self) -> Optional[Callable]:
        try:
            from torchvision import transforms
        except ImportError:
            return None
        if self.normalize:
            return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=(0.5,), std=(0.5,))])
        return transforms.ToTensor()
