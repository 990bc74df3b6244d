from django.contrib import admin

from semantic_search.admin import SemanticSearchAdminMixin

from .models import Author, Book, Language


@admin.register(Book)
class BookAdmin(SemanticSearchAdminMixin, admin.ModelAdmin):
    list_display = ["title", "author", "language"]
    list_filter = ["language"]
    ordering = ["title"]


@admin.register(Author)
class AuthorAdmin(admin.ModelAdmin):
    search_fields = ["name"]


@admin.register(Language)
class LanguageAdmin(admin.ModelAdmin):
    list_display = ["name", "code"]
