"""A corpus of videos in object storage: listing it and turning one video into table rows."""
