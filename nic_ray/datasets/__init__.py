"""Data to try nic-ray on: synthetic pyramidal slides, the NIC synthetic task, sample slides."""
