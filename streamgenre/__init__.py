"""streamgenre: music-genre classification trained straight from sharded MP3 archives.

Importing the package pulls in no torch, PyAV or webdataset, so `streamgenre --help` is instant.
"""

__version__ = "0.1.0"
