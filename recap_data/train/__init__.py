"""What both trainers share: the checkpoint directory they write, the loss log and schedule, the
tiny models' tokenizer."""
