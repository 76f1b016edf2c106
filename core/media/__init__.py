"""What people post besides text and images: documents read into text, recordings
transcribed, videos sampled into frames for the model."""
