"""Files that ship with retouch: the legend font (Roboto, Apache-2.0: Roboto-LICENSE.txt)."""
