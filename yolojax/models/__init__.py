"""yolojax.models: YOLOv8 (`yolov8.YOLOv8`), its building blocks (`layers`), and the weights format (`weights`)."""
