"""DeiT-LT (Rangwani et al., "DeiT-LT: Distillation Strikes Back for Vision Transformer
Training on Long-Tailed Datasets", CVPR 2024): a CNN teacher distilled into a ViT on
long-tailed images.

- `vit`: the student, a DeiT (class and distillation tokens, two heads).
- `resnet`: the teacher, a CIFAR-style ResNet.
- `longtail`: the exponential long-tailed profile, the seeded split, head/medium/tail classes.
- `pnm`, `datasets`: PGM/PPM images; scikit-learn's digits or an image folder, cut long-tailed.
- `augment`: weak views (shifts) and strong ones (random resized crops, mixup, cutmix).
- `losses`: cross-entropy, hard distillation, deferred re-weighting (DRW).
- `sam`: the teacher's sharpness-aware minimization step.
- `report`: accuracy overall and on head, medium and tail classes, per head.
- `run`: the `vision` workload, `run_vision(config, context)`: teacher, then student.
"""
