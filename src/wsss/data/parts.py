"""Codes of the synthetic benchmark's diagnostic part annotation.

The annotation is a ``uint8`` PNG per image (``SegmentationPart/<id>.png``) with one code per
pixel. Evaluation uses it for head/body recall and context false positives.
"""

OTHER_BACKGROUND = 0
HEAD = 1
BODY_NEAR = 2
BODY_FAR = 3
CONTEXT_PRESENT = 4  # background texture linked to a class that is present in the image
CONTEXT_ABSENT = 5  # background texture linked to a class that is absent from the image
IGNORE = 255  # boundary band (also 255 in the mask)

PART_NAMES = {
    OTHER_BACKGROUND: "background",
    HEAD: "head",
    BODY_NEAR: "body_near",
    BODY_FAR: "body_far",
    CONTEXT_PRESENT: "context_present",
    CONTEXT_ABSENT: "context_absent",
}
PARTS_DIRNAME = "SegmentationPart"
