"""What people post besides text and images: documents read into text for the model."""
