from django.db import models


class Language(models.Model):
    code = models.CharField(max_length=8, unique=True)  # "de"
    name = models.CharField(max_length=64)  # "German"

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Author(models.Model):
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=300)
    summary = models.TextField()
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    language = models.ForeignKey(Language, on_delete=models.PROTECT, related_name="books")
    published = models.BooleanField(default=True)

    class Meta:
        ordering = ["title"]

    def __str__(self):
        return self.title
