"""Small reusable widgets of the app's pages."""
