"""Reading and writing files: radiographs (JPEG, PNG, TIFF, DICOM), the AASCE layout, synthetic radiographs, safe outputs. No torch."""
