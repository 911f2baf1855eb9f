"""The paper's numbers, named once: "Music Genre Classification with 2D CNN" (FMA small).

It cut a 3-s window of each 30-s clip, drew a librosa mel spectrogram at librosa's default
22050 Hz, and trained its CNN with Adam at 5e-4, batch 25, for 20 epochs. `recipes.PAPER`
restores exactly that; other modules take their defaults from here.
"""

PAPER_SAMPLE_RATE = 22050  # librosa's default rate
PAPER_WINDOW_S = 3.0
PAPER_OFFSET_S = 15.0  # the paper took the first 3 s; the window at 0:15 skips intros (see README)
PAPER_BATCH_SIZE = 25
PAPER_LR = 5e-4
PAPER_EPOCHS = 20
