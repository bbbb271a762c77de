"""Fine-tuning: training data from the knowledge base (dataset), LoRA training (lora), adapters with lineage and
staleness (adapters), and the `finetune` / `hybrid` answering strategies (strategies).

Heavy dependencies (torch, transformers, peft, gguf) are imported inside the functions that need them; a missing
one raises MissingExtraError naming the `train` extra."""

TRAIN_EXTRA = "train"
