"""Strategies and the device/process topology."""
from volt.distributed.strategy import SingleDeviceStrategy, Strategy

__all__ = ["SingleDeviceStrategy", "Strategy"]
