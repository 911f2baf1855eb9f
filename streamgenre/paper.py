"""The numbers of "Music Genre Classification with 2D CNN", named once.

Everything that means "as the paper did it" imports its value from here, so a reader finds
each number in one place and a change (say, another batch size) cannot miss a copy.
"""

from __future__ import annotations

PAPER_SAMPLE_RATE = 22050  # Hz: librosa's default rate, at which the paper computed its mel spectrograms
PAPER_WINDOW_S = 3.0  # seconds of audio per example
PAPER_BATCH_SIZE = 25
PAPER_LR = 5e-4  # Adam
PAPER_EPOCHS = 20
# The paper's inputs: 432x288 PNGs, as IPython's inline backend draws a 6x4-inch figure at 72 dpi.
PAPER_FIGURE_INCHES = (6.0, 4.0)
PAPER_FIGURE_DPI = 72
PAPER_COLORMAP = "magma"  # librosa.display.specshow's map for dB data
FMA_SMALL_CLIPS = 8000  # FMA small, the paper's dataset: 8 genres x 1000 clips

# Not the paper's: this project's default window starts at 0:15, past the intros that make the
# first 3 s of many tracks (the paper's choice) a poor sample of the genre.
DEFAULT_OFFSET_S = 15.0
# Not the paper's either: where audio is brought to the model's rate, in the loader or inside the model.
RESAMPLE_PLACES = ("cpu", "device")
