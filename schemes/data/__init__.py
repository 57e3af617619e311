"""Data sets: the embedded digits, IDX/CIFAR/npz files, image folders, and what every member holds."""
