"""The applications of Lumiere (Sec. 4): inputs (inputs.py), samplers (edit.py), style tuning (style_tune.py)."""
