"""Pure array functions shared by YOLOv8 and the two-stage path: boxes, anchors, NMS, RoI ops."""
