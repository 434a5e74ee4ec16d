"""Training: the one loop, evaluation while training, fine-tuning teachers, distillation losses, students."""
